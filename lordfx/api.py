"""The editing API: ``lordfx.load("cars").transfer(class_img, content_img)``.

Transfer (paper §3.2): x(1←2) = G(E_c(x2), E_y(x1)). Each input image goes through its
encoder once; codes can be cached and reused (one reference applied to many images).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from lordfx import precision
from lordfx.bundle import Bundle, load_bundle
from lordfx.domain import Domain
from lordfx.errors import InputError, UsageError
from lordfx.imageio import read_image
from lordfx.preprocess import ResizePreprocessor, tensor_to_pil
from lordfx.render import SWAP_SETTINGS, check_render, class_edit_settings, render_photo

ImageLike = Image.Image | str | os.PathLike[str]


class Editor:
    """A loaded bundle plus its domain's preprocessing."""

    def __init__(self, bundle: Bundle, preprocessor: Any, domain: Domain | None = None) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.pre = preprocessor
        self.domain = domain
        self.device = next(self.model.parameters()).device
        # precision "auto" (lordfx.precision): bf16 inference only where it is native;
        # LORDFX_PRECISION=fp32|bf16 forces it
        self.precision = precision.resolve(os.environ.get("LORDFX_PRECISION", "auto"), self.device)
        for net in (self.model.generator, self.model.class_encoder, self.model.content_encoder):
            precision.autocast_module(net, self.precision, self.device.type)

    @classmethod
    def from_domain(cls, domain: Domain, device: str = "cpu") -> Editor:
        bundle = load_bundle(domain.require_bundle(), device=device)
        return cls(bundle, domain.make_preprocessor(bundle.model.cfg.image_size), domain)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], device: str = "cpu") -> Editor:
        bundle = load_bundle(Path(path), device=device)
        arch = bundle.model.cfg
        return cls(bundle, ResizePreprocessor(arch.image_size, arch.channels))

    # -- codes ------------------------------------------------------------------------------
    def _prepare(
        self, images: list[ImageLike]
    ) -> tuple[torch.Tensor, list[Any], list[Image.Image]]:
        pils = [im if isinstance(im, Image.Image) else read_image(im) for im in images]
        tensors, contexts = zip(*(self.pre.to_model(im) for im in pils), strict=True)
        return torch.stack(tensors).to(self.device), list(contexts), pils

    @torch.inference_mode()
    def encode_class(self, images: list[ImageLike]) -> torch.Tensor:
        """Shape: n images → (n, class_dim)."""
        x, _, _ = self._prepare(images)
        return self.model.encode_class(x)

    @torch.inference_mode()
    def encode_content(self, images: list[ImageLike]) -> torch.Tensor:
        """Shape: n images → (n, content_dim)."""
        x, _, _ = self._prepare(images)
        return self.model.encode_content(x)

    def class_code(self, name: str) -> torch.Tensor:
        """The learned stage-1 code of a named training class (e.g. an expression)."""
        names = self.bundle.class_names
        if name not in names or self.bundle.class_codes is None:
            label = self.domain.class_label if self.domain else "class"
            raise UsageError(f"unknown {label} {name!r}; valid: {', '.join(names)}")
        return self.bundle.class_codes[names.index(name)]

    # -- edits ------------------------------------------------------------------------------
    @torch.inference_mode()
    def transfer(self, class_image: ImageLike, content_image: ImageLike) -> Image.Image:
        """Class of ``class_image``, content of ``content_image``."""
        return self.transfer_many([class_image], self.encode_content([content_image]))[0]

    @torch.inference_mode()
    def transfer_many(
        self, class_images: list[ImageLike], content_code: torch.Tensor, batch_size: int = 64
    ) -> list[Image.Image]:
        """Apply one content code (shape (1, content_dim)) to many class images, batched."""
        out: list[Image.Image] = []
        for start in range(0, len(class_images), batch_size):
            x, contexts, pils = self._prepare(class_images[start : start + batch_size])
            class_code = self.model.encode_class(x)
            generated = self.model.decode(content_code.expand(x.shape[0], -1), class_code)
            out += [
                self.pre.from_model(g, c, p)
                for g, c, p in zip(generated, contexts, pils, strict=True)
            ]
        return out

    def transfer_files(self, class_path: Path, content_path: Path) -> Image.Image:
        content_code = self.encode_content_file(content_path)
        return self.swap_content_file(class_path, content_code)

    # -- photo edits (file-level, used by the CLI verbs: errors name the file) ------------
    # Each takes a path or a PIL image and returns a PIL image of the input photo's size.
    def _pre_for(self, face_index: int | None) -> Any:
        if face_index is None:
            return self.pre
        if not hasattr(self.pre, "with_face_index"):
            raise UsageError("--face applies only to domains that detect faces")
        return self.pre.with_face_index(face_index)

    def _load(self, image: ImageLike, pre: Any) -> tuple[torch.Tensor, Any, Image.Image]:
        """Shape: file or PIL → ((1, C, S, S) on the device, preprocessing context, the photo)."""
        if isinstance(image, Image.Image):
            x, context = pre.to_model(image)
            return x[None].to(self.device), context, image
        photo = read_image(image)
        try:
            x, context = pre.to_model(photo)
        except InputError as exc:
            if exc.path == "image":  # the preprocessor saw only pixels: name the file
                raise InputError(Path(image), exc.problem) from None
            raise
        return x[None].to(self.device), context, photo

    @torch.inference_mode()
    def encode_content_file(self, path: ImageLike) -> torch.Tensor:
        """Content code of a reference image, shape (1, content_dim); compute once, reuse."""
        x, _, _ = self._load(path, self.pre)
        return self.model.encode_content(x)

    @torch.inference_mode()
    def swap_content_file(
        self,
        path: ImageLike,
        content_code: torch.Tensor,
        face_index: int | None = None,
        render: str = "generate",
    ) -> Image.Image:
        """``path``'s class with ``content_code`` (e.g. swap-pose: identity kept, pose taken),
        mapped back into the photo by the domain's preprocessor.

        ``render="generate"`` pastes the model's pixels; ``"warp"`` renders the change from
        the model's reconstruction G(E_c(x), E_y(x)) (anchored 40 % on the photo itself,
        :data:`lordfx.render.SWAP_SETTINGS`) to the edit on the photo's own pixels at its
        resolution (motion + low-frequency residual, :mod:`lordfx.render`)."""
        check_render(render)
        pre = self._pre_for(face_index)
        x, context, photo = self._load(path, pre)
        class_code = self.model.encode_class(x)
        generated = self.model.decode(content_code, class_code)[0]
        if render == "warp":
            recon = self.model.decode(self.model.encode_content(x), class_code)[0]
            return render_photo(pre, context, photo, recon, generated, settings=SWAP_SETTINGS)
        return pre.from_model(generated, context, photo)

    def swap_pose_file(
        self,
        path: ImageLike,
        content_code: torch.Tensor,
        face_index: int | None = None,
        render: str = "warp",
    ) -> Image.Image:
        """:meth:`swap_content_file` with the faces default, ``render="warp"``."""
        return self.swap_content_file(path, content_code, face_index, render)

    @torch.inference_mode()
    def set_class_file(
        self,
        path: ImageLike,
        name: str,
        strength: float = 1.0,
        face_index: int | None = None,
        residual: bool = True,
        render: str = "warp",
    ) -> Image.Image:
        """``path``'s content with the learned code of class ``name``, interpolated from the
        image's own class code by ``strength`` in [0, 1] (0 = reconstruction).

        ``render="warp"``: the change from G(c, own code) (anchored on the photo by 0.4 ×
        strength, :func:`lordfx.render.class_edit_settings`) to G(c, code) is rendered on the
        photo's own pixels at its resolution (motion + low-frequency residual,
        :mod:`lordfx.render`), so strength 0 returns the photo unchanged. ``"generate"``
        (or ``residual=False``, the older spelling): the generated crop replaces the region."""
        check_render(render)
        if not 0.0 <= strength <= 1.0:
            raise UsageError(f"strength must be in [0, 1], got {strength}")
        target = self.class_code(name)[None]
        pre = self._pre_for(face_index)
        x, context, photo = self._load(path, pre)
        own = self.model.encode_class(x)
        code = own + strength * (target - own)
        content = self.model.encode_content(x)
        generated = self.model.decode(content, code)[0]
        if render == "warp" and residual:
            base = self.model.decode(content, own)[0]
            settings = class_edit_settings(strength)
            return render_photo(pre, context, photo, base, generated, settings=settings)
        return pre.from_model(generated, context, photo)

    set_expression_file = set_class_file

    def set_expression(
        self,
        image: ImageLike,
        name: str,
        strength: float = 1.0,
        face_index: int | None = None,
        residual: bool = True,
        render: str = "warp",
    ) -> Image.Image:
        """``image`` with the expression (class) ``name``, everything else kept:
        x' = G(E_c(x), e_y + strength·(e_name − e_y)) with e_y = E_y(x) (paper §3.2; strength
        0 = the photo; ``render`` "warp" moves the photo's own pixels as the model's edit
        moves its reconstruction, "generate" pastes the model's pixels, see
        :meth:`set_class_file`). Unknown names raise :class:`UsageError` listing the valid ones.

        Shape: photo (W, H) → photo (W, H); only the chosen face's region changes.
        """
        return self.set_class_file(image, name, strength, face_index, residual, render)

    def swap_pose(
        self,
        image: ImageLike,
        ref: ImageLike,
        face_index: int | None = None,
        render: str = "warp",
    ) -> Image.Image:
        """``image``'s class (identity) with ``ref``'s content (pose, expression):
        x(1←2) = G(E_c(ref), E_y(image)) (paper §3.2). ``render="warp"`` (default) moves the
        photo's own face at its resolution by the motion from the model's reconstruction
        G(E_c(image), E_y(image)) to x(1←2); ``"generate"`` pastes the model's pixels.

        Shape: photo (W, H) → photo (W, H); only the chosen face's region changes.
        """
        return self.swap_content_file(image, self.encode_content_file(ref), face_index, render)

    @torch.inference_mode()
    def reconstruct(self, image: ImageLike) -> Image.Image:
        x, _, _ = self._prepare([image])
        return tensor_to_pil(self.model(x)[0])
