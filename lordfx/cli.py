"""The ``lordfx`` command line. Results go to stdout (or files), messages to stderr.

Exit codes: 0 success, 1 an error the user can act on (bad input file, no trained model),
2 a usage error (unknown option, missing argument, invalid value, an output that cannot be
written), 130 / 143 interrupted by Ctrl-C / SIGTERM. Every message is one line; Python
warnings are printed as ``lordfx: warning: ...`` lines, and an unexpected exception as one
``lordfx: error: ...`` line (``-v`` adds its traceback).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import typer

try:  # typer >= 0.2x vendors click as typer._click; older releases use click itself
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed typer
    import click  # type: ignore[no-redef]
from typer.core import TyperGroup

import lordfx
from lordfx.errors import LordfxError
from lordfx.host import get_host


class _Group(TyperGroup):
    """Prints every error as one ``lordfx: error: ...`` line with the right exit code."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from lordfx.imageio import set_max_pixels

        try:
            return self._main(*args, standalone_mode=standalone_mode, **kwargs)
        finally:
            set_max_pixels(None)  # --max-pixels lasts one command (tests run many in-process)

    def _main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `lordfx`: show the help
                typer.echo(exc.format_message())
                return _fail("no command given", exc.exit_code, standalone_mode)
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            return _fail(f"{exc.format_message()}{hint}", exc.exit_code, standalone_mode)
        except click.exceptions.ClickException as exc:
            return _fail(exc.format_message(), exc.exit_code, standalone_mode)
        except typer.Abort:
            return _fail("aborted", 1, standalone_mode)
        except KeyboardInterrupt:
            return _fail("interrupted (Ctrl-C)", 130, standalone_mode)
        except LordfxError as exc:
            return _fail(str(exc), exc.exit_code, standalone_mode)
        except Exception as exc:  # a bug or an environment problem: one line, not a traceback
            if logging.getLogger("lordfx").isEnabledFor(logging.DEBUG):
                traceback.print_exc(file=sys.stderr)
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = "" if _verbose() else " (run with -v for the traceback)"
            return _fail(f"unexpected {type(exc).__name__}: {detail}{hint}", 1, standalone_mode)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return rv


def _fail(message: str, code: int, standalone_mode: bool) -> int:
    typer.echo(f"lordfx: error: {message}", err=True)
    if standalone_mode:
        sys.exit(code)
    return code


class _StderrHandler(logging.Handler):
    """Writes ``lordfx: level: message`` to whatever ``sys.stderr`` is at emit time."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"lordfx: {record.levelname.lower()}: {record.getMessage()}\n")


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger("lordfx")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
        root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    warnings.showwarning = _show_warning


def _verbose() -> bool:
    return logging.getLogger("lordfx").isEnabledFor(logging.DEBUG)


def _show_warning(  # noqa: PLR0913 - warnings.showwarning's signature
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Python warnings (from PIL, torch, ...) as one ``lordfx: warning:`` line each."""
    text = " ".join(str(message).split())
    where = f" ({category.__name__}, {filename}:{lineno})" if _verbose() else ""
    logging.getLogger("lordfx.warnings").warning("%s%s", text, where)


def _max_pixels(value: str | None) -> str | None:
    from lordfx.imageio import parse_pixels, set_max_pixels

    try:
        set_max_pixels(parse_pixels(value) if value is not None else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lordfx {lordfx.__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The CLI: core commands plus everything the plugins register."""
    app = typer.Typer(
        name="lordfx",
        cls=_Group,
        help="Image editing with LORD: swap class and content between images.",
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version."
        ),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="More messages on stderr."),
        max_pixels: str | None = typer.Option(
            None,
            "--max-pixels",
            callback=_max_pixels,
            metavar="N",
            help="Refuse images larger than N pixels, e.g. 150M [default: $LORDFX_MAX_PIXELS "
            "or 64M].",
        ),
    ) -> None:
        _setup_logging(verbose)

    app.command("plugins")(plugins_command)
    app.command("transfer")(transfer_command)
    _setup_logging(False)
    get_host().register_commands(app)
    return app


def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """List the loaded plugins, their hooks and domains, and which domains have a model."""
    summary = get_host().summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for p in summary["plugins"]:
        typer.echo(f"{p['name']} {p['version']}  hooks: {', '.join(p['hooks']) or '-'}")
        for cmd in p["commands"]:
            typer.echo(f"    command {cmd}")
        for name in p["domains"]:
            d = next(d for d in summary["domains"] if d["name"] == name)
            state = "trained model" if d["has_model"] else "no trained model yet"
            typer.echo(
                f"    domain {name}: {d['image_size']}px, class = {d['class_label']}, "
                f"content = {d['content_label']} ({state})"
            )


def transfer_command(
    class_image: Path = typer.Argument(..., help="Image whose class (identity, model...) to keep."),
    content_image: Path = typer.Argument(..., help="Image whose content (pose, view...) to take."),
    domain: str = typer.Option(..., "--domain", "-d", help="Domain name (see `lordfx plugins`)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output image [default: CLASS__CONTENT.png in the cwd]."
    ),
) -> None:
    """Generic LORD transfer: x(class <- content) = G(content code of CONTENT, class code of CLASS)."""
    from lordfx.imageio import check_output_path, write_image_atomic

    dom = get_host().domain(domain)
    dom.require_bundle()
    out = output or Path(f"{class_image.stem}__{content_image.stem}.png")
    check_output_path(out, [class_image, content_image])
    editor = lordfx.load(domain)
    result = editor.transfer_files(class_image, content_image)
    write_image_atomic(result, out)
    typer.echo(str(out))


def main() -> None:
    """Console-script entry point."""
    build_app()()


if __name__ == "__main__":
    main()
