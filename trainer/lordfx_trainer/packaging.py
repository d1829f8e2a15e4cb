"""``lordfx package``: a finished run → an installable lordfx plugin distribution.

The distribution has the layout of every built-in plugin (:data:`lordfx.domain.MODEL_DIRNAME`)::

    OUT/pyproject.toml          lordfx-NAME, entry point ``lordfx: NAME = lordfx_NAME``
    OUT/README.md               how to install it, what it is (points to the model card)
    OUT/lordfx_NAME/__init__.py register_domains: the Domain, read from the run's config
    OUT/lordfx_NAME/model/      the run's bundle in fp16 (sha256 of every file in config.json)
    OUT/lordfx_NAME/MODEL_CARD.md  data, licence, recipe, eval results, file hashes

``pip install OUT`` registers the domain; ``pip uninstall lordfx-NAME`` removes it. The
directory is built beside OUT and renamed into place, so OUT is never half-written.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lordfx.domain import MODEL_CARD, MODEL_DIRNAME, Domain
from lordfx.errors import InputError, LordfxError, UsageError
from lordfx_trainer.packaging_card import model_card, readme

log = logging.getLogger("lordfx.package")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
#: PEP 440 public versions in their usual spelling (1.0, 0.2.1rc1, 1.0.post2, 2.0.dev3).
VERSION_RE = re.compile(r"^\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?$")
EVAL_FILE = "eval.json"


@dataclass(frozen=True)
class PackageNames:
    """The names one ``--name`` gives: domain NAME, distribution ``lordfx-NAME`` (PEP 503
    normalised), import package and entry point ``lordfx_NAME``."""

    domain: str
    distribution: str
    module: str

    @classmethod
    def from_name(cls, name: str) -> PackageNames:
        if not NAME_RE.match(name):
            raise UsageError(
                f"--name {name!r} is not a valid plugin name: use lowercase letters and digits, "
                "starting with a letter, words joined by single '-' or '_' (e.g. my-shapes)"
            )
        module = "lordfx_" + name.replace("-", "_")
        if not module.isidentifier() or keyword.iskeyword(module):
            raise UsageError(f"--name {name!r} does not give a valid module name ({module})")
        return cls(name, "lordfx-" + name.replace("_", "-"), module)


@dataclass(frozen=True)
class DomainText:
    """What the run's config cannot know: how to describe the domain's two factors."""

    description: str = ""
    class_label: str = "class"
    content_label: str = "content"
    data_licence: str = ""
    version: str = "0.1.0"


@dataclass(frozen=True)
class RunFiles:
    """A finished run as ``lordfx package`` reads it."""

    run_dir: Path
    config: dict[str, Any]  # the run's config.json (TrainConfig keys + "run")
    bundle_dir: Path
    eval_result: dict[str, Any] | None


def read_run(run_dir: Path) -> RunFiles:
    """The run's config, its bundle directory and eval.json (if ``lordfx eval`` ran);
    a one-line error naming the file when the run has no bundle."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(run_dir, "no such run directory")
    config = _read_json(run_dir / "config.json", "not a run directory written by `lordfx train`")
    bundle_dir = run_dir / "bundle"
    if not (bundle_dir / "config.json").is_file():
        raise InputError(
            bundle_dir,
            "no bundle: the run has not finished stage 2 (finish it with "
            f"`lordfx train --resume {run_dir}`; runs with amortized_epochs=0 have none)",
        )
    eval_path = run_dir / EVAL_FILE
    eval_result = _read_json(eval_path, "") if eval_path.is_file() else None
    return RunFiles(run_dir, config, bundle_dir, eval_result)


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"no such file ({missing})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None


def check_name_free(names: PackageNames) -> None:
    """Refuse a name an installed plugin, domain, distribution or package already uses."""
    from lordfx.host import get_host

    host = get_host()
    taken = []
    if names.domain in host.domains:
        taken.append(f"domain {names.domain!r} of plugin {host.domains[names.domain].plugin!r}")
    if names.domain in host.plugins:
        taken.append(f"plugin {names.domain!r}")
    try:
        dist = metadata.distribution(names.distribution)
        taken.append(f"distribution {names.distribution} {dist.version}")
    except metadata.PackageNotFoundError:
        pass
    if not taken and importlib.util.find_spec(names.module) is not None:
        taken.append(f"import package {names.module}")
    if taken:
        again = (
            f" (`pip uninstall {names.distribution}` to replace it)"
            if any("distribution" in t for t in taken)
            else ""
        )
        raise UsageError(
            f"--name {names.domain!r} is taken by the installed {taken[0]}{again}; choose another name"
        )


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory; not replacing it")


def domain_for(run: RunFiles, names: PackageNames, text: DomainText) -> Domain:
    """The Domain the package will declare, from the run's config (validated here, so a
    bad value fails before anything is written)."""
    bundle_info = _read_json(run.bundle_dir / "config.json", "")
    arch = bundle_info.get("architecture", {})
    data = (run.config.get("run") or {}).get("train") or {}
    source = Path(str(data.get("source") or run.config.get("dataset"))).name
    description = text.description or (
        f"{names.domain} (trained on {source}): class = {text.class_label}, "
        f"content = {text.content_label}"
    )
    try:
        return Domain(
            name=names.domain,
            description=description,
            image_size=int(arch.get("image_size", run.config["image_size"])),
            channels=int(arch.get("channels", run.config["channels"])),
            class_label=text.class_label,
            content_label=text.content_label,
            class_names=tuple(str(c) for c in bundle_info.get("class_names", [])),
            train_hint=f"Reinstall {names.distribution}: its {MODEL_DIRNAME}/ folder is missing.",
        )
    except (ValueError, KeyError) as exc:
        raise InputError(
            run.bundle_dir / "config.json", f"cannot declare a domain: {exc}"
        ) from None


def write_package(
    run_dir: Path,
    name: str,
    out: Path | None = None,
    force: bool = False,
    text: DomainText = DomainText(),
) -> Path:
    """Write the plugin distribution of run ``run_dir`` to ``out`` (default ./lordfx-NAME).

    Checks everything first (names, run, bundle, ``out``), then builds the tree beside ``out``
    and renames it into place; ``force`` replaces an existing ``out``.
    """
    names = PackageNames.from_name(name)
    if not VERSION_RE.match(text.version):
        raise UsageError(f"--version {text.version!r} is not a version such as 0.1.0 (PEP 440)")
    out = Path(out) if out is not None else Path(names.distribution)
    check_out(out, force)
    run = read_run(run_dir)
    check_name_free(names)
    domain = domain_for(run, names, text)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_tree(tmp, run, names, domain, text)
        _publish_modes(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # a bare folder name would make pip look for a PyPI project of that name
    target = str(out) if os.sep in str(out) else f".{os.sep}{out}"
    log.info("wrote %s (install it: pip install --no-build-isolation %s)", out, target)
    return out


def _write_tree(
    root: Path, run: RunFiles, names: PackageNames, domain: Domain, text: DomainText
) -> None:
    from lordfx.bundle import load_bundle, save_bundle

    package = root / names.module
    package.mkdir()
    src = load_bundle(run.bundle_dir)  # verifies the run's sha256s
    info = {k: v for k, v in src.info.items() if k not in ("files", "dtype", "architecture")}
    info["domain"] = names.domain
    info["packaged_from"] = {"run": str(run.run_dir), "files": src.info.get("files", {})}
    if text.data_licence:
        info["data"] = {**info.get("data", {}), "licence": text.data_licence}
    bundle = save_bundle(
        package / MODEL_DIRNAME, src.model, info, src.class_codes, half=True, extras=src.extras
    )
    bundle_info = json.loads((bundle / "config.json").read_text())
    (package / "__init__.py").write_text(plugin_module(names, domain, run.run_dir))
    (package / MODEL_CARD).write_text(model_card(names, domain, run, bundle, bundle_info))
    (root / "README.md").write_text(readme(names, domain))
    (root / "pyproject.toml").write_text(pyproject(names, domain, text.version))


def _publish_modes(root: Path) -> None:
    """Temp dirs and files are private (0700/0600); a distribution is read by everyone:
    0755 folders, 0644 files, less what the umask takes away."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o755 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)


def _replace_dir(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        raise LordfxError(f"{old}: left over from an interrupted --force; remove it first")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old)


def pyproject(names: PackageNames, domain: Domain, version: str) -> str:
    """The distribution's pyproject.toml: the same shape as plugins/*/pyproject.toml."""
    return f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{names.distribution}"
version = "{version}"
description = {json.dumps(f"lordfx plugin: the {domain.name} domain (trained LORD model)")}
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["lordfx>=0.1"]

[project.entry-points.lordfx]
{json.dumps(names.domain)} = "{names.module}"

[tool.setuptools.packages.find]
include = ["{names.module}*"]

[tool.setuptools.package-data]
"*" = ["{MODEL_DIRNAME}/*", "*.md"]
"""


def plugin_module(names: PackageNames, domain: Domain, run_dir: Path) -> str:
    """The package's ``__init__.py``: declares the domain exactly as the built-in plugins do."""
    classes = "".join(f"    {json.dumps(c)},\n" for c in domain.class_names)
    return f'''"""lordfx plugin {names.distribution}: the {domain.name} domain.

Written by `lordfx package` from the run {run_dir.name}; see MODEL_CARD.md. Edit the
Domain below (labels, description, a custom ``preprocessor="module:factory"``) as you like.
"""

from __future__ import annotations

from collections.abc import Callable

from lordfx import Domain, hookimpl
from lordfx.domain import package_model_dir

MODEL_DIR = package_model_dir(__name__)  # <package>/{MODEL_DIRNAME}/: the layout of every plugin
CLASS_NAMES = (
{classes})


@hookimpl
def register_domains(register: Callable[[Domain], None]) -> None:
    register(
        Domain(
            name={json.dumps(domain.name)},
            description={json.dumps(domain.description)},
            image_size={domain.image_size},
            channels={domain.channels},
            class_label={json.dumps(domain.class_label)},
            content_label={json.dumps(domain.content_label)},
            class_names=CLASS_NAMES,
            bundle=MODEL_DIR,
            # None: centre square crop + resize (lordfx.preprocess.ResizePreprocessor), the
            # same canonical crop the training images went through.
            preprocessor=None,
            train_hint={json.dumps(domain.train_hint)},
        )
    )
'''
