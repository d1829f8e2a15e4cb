"""The faces domain's preprocessor: detect → align → model → paste back.

Implements the two-method contract of :class:`lordfx.preprocess.ResizePreprocessor`
(``to_model`` / ``from_model``) so the editing API can use it unchanged; the domain names it
as ``preprocessor="lordfx_faces.preprocess:make_preprocessor"``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from PIL import Image

from lordfx.errors import InputError
from lordfx.preprocess import pil_to_tensor
from lordfx_faces.align import (
    CELEBA_FRAMING,
    Framing,
    align_face,
    crop_params,
    similarity_matrix,
    warp_to_crop,
)
from lordfx_faces.detect import FaceBox, check_aligner, detect_faces
from lordfx_faces.paste import (
    CELEBA_ELLIPSE,
    DEFAULT_FEATHER,
    Ellipse,
    crop_mask,
    paste_back,
    paste_delta,
)

log = logging.getLogger("lordfx_faces.preprocess")

# The faces Domain's image_size (lordfx_faces/__init__.py); a bundle trained at another size
# should pass its own size to make_preprocessor.
DEFAULT_IMAGE_SIZE = 64
# Rolls this small are within the eye detector's noise: keep the training framing exactly
# (no extra bilinear resampling) instead of rotating.
MIN_ROLL_DEGREES = 2.0


class NoFaceError(InputError):
    """No usable face in a photo (none detected, or the requested index is out of range).

    An :class:`InputError`, so batch processing reports it per file; ``path`` defaults to
    ``"image"`` when the preprocessor only saw pixels; re-raise with :meth:`for_path`.
    """

    def __init__(self, problem: str, path: object = "image", num_faces: int = 0) -> None:
        super().__init__(path, problem)
        self.num_faces = num_faces

    def for_path(self, path: object) -> NoFaceError:
        """The same error naming ``path``."""
        return NoFaceError(self.problem, path, self.num_faces)


@dataclass(frozen=True, eq=False)
class FaceContext:
    """What :meth:`FacePreprocessor.from_model` needs to paste a result back."""

    face: FaceBox
    face_index: int
    num_faces: int
    image_size: tuple[int, int]  # (W, H) of the photo the crop came from
    M: np.ndarray  # noqa: N815 - (2, 3) photo → crop
    M_inv: np.ndarray  # noqa: N815 - (2, 3) crop → photo
    crop: np.ndarray  # (S, S, 3) uint8, the aligned original (colour reference)


@dataclass(frozen=True)
class FacePreprocessor:
    """Faces: Haar detection, celeba_faces framing (roll-corrected), paste-back.

    ``face_index`` picks a face in detection order (largest first, see ``list_faces``);
    ``None`` means the largest. ``correct_roll`` rotates tilted faces upright (by the eye
    line) before the model sees them and rotates the result back when pasting; ``align``
    says where that eye line comes from (``"haar"``: OpenCV's eye cascade; ``"dlib5"``:
    dlib's 5-point model, extra ``landmarks``; ``"auto"``: dlib5 when installed, else haar —
    see docs/results.md for how they compare).
    """

    image_size: int
    face_index: int | None = None
    correct_roll: bool = True
    feather: float = DEFAULT_FEATHER
    color_match: bool = True
    align: str = "auto"
    # The crop's framing and the paste mask (subclasses with another framing override).
    framing: ClassVar[Framing] = CELEBA_FRAMING
    ellipse: ClassVar[Ellipse] = CELEBA_ELLIPSE

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.face_index is not None and self.face_index < 0:
            raise ValueError(f"face_index must be ≥ 0, got {self.face_index}")
        check_aligner(self.align)

    def with_face_index(self, face_index: int | None) -> FacePreprocessor:
        """A copy that edits another face (for ``--face N``)."""
        return dataclasses.replace(self, face_index=face_index)

    def with_align(self, align: str) -> FacePreprocessor:
        """A copy whose roll comes from another eye finder (for ``--align``)."""
        return dataclasses.replace(self, align=check_aligner(align))

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """Faces in ``image``, largest first, with the roll this preprocessor will use."""
        faces = detect_faces(_rgb_array(image), self.correct_roll, self.align)
        return [
            f
            if abs(f.roll_degrees) >= MIN_ROLL_DEGREES
            else dataclasses.replace(f, roll_degrees=0.0)
            for f in faces
        ]

    def choose(self, faces: list[FaceBox]) -> int:
        """Index of the face to edit, or :class:`NoFaceError` saying what was found."""
        if not faces:
            raise NoFaceError(
                "no face found (the detector needs a roughly frontal, upright face at "
                "least 5% of the shorter image side)"
            )
        index = 0 if self.face_index is None else self.face_index
        if index >= len(faces):
            found = f"{len(faces)} face{'s' if len(faces) != 1 else ''} found"
            raise NoFaceError(
                f"face index {index} is out of range: {found} (valid: 0–{len(faces) - 1}; "
                "see --list-faces)",
                num_faces=len(faces),
            )
        return index

    def to_model(self, image: Image.Image) -> tuple[torch.Tensor, FaceContext]:
        """Shape: PIL photo (any size) → ((3, S, S) float in [0, 1], :class:`FaceContext`).

        Raises :class:`NoFaceError` when there is no face (or no face ``face_index``).
        """
        arr = _rgb_array(image)
        faces = self.detect(image)
        index = self.choose(faces)
        crop, m, m_inv = align_face(arr, faces[index], self.image_size)
        log.debug("face %d of %d: %s", index, len(faces), faces[index])
        ctx = FaceContext(faces[index], index, len(faces), image.size, m, m_inv, crop)
        return pil_to_tensor(Image.fromarray(crop), 3), ctx

    def from_model(
        self, generated: torch.Tensor, context: FaceContext, original: Image.Image
    ) -> Image.Image:
        """Shape: (3, S, S) float in [0, 1] → PIL RGB of the original photo's size, the
        generated face pasted over the chosen face (see :func:`paste_back`)."""
        if tuple(generated.shape) != (3, self.image_size, self.image_size):
            raise ValueError(
                f"expected a (3, {self.image_size}, {self.image_size}) tensor, "
                f"got {tuple(generated.shape)}"
            )
        if original.size != context.image_size:
            raise ValueError(
                f"original is {original.size}, but the face was found in a "
                f"{context.image_size} image"
            )
        gen = generated.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        out = paste_back(
            _rgb_array(original),
            gen,
            context.M_inv,
            feather=self.feather,
            color_match=self.color_match,
            reference_crop=context.crop,
        )
        return Image.fromarray(out)

    # -- render="warp" (lordfx.render): the same face at the photo's own resolution ----------
    def photo_crop(self, context: FaceContext, original: Image.Image) -> tuple[np.ndarray, Any]:
        """The face's aligned crop at the photo's resolution (the model crop's square, same
        roll, side = its width in photo pixels), and the crop → photo matrix to paste it back.

        Shape: → ((N, N, C) uint8 with C = 1 for an ``"L"`` photo else 3, M_inv (2, 3)).
        """
        side = int(crop_params(context.face, self.framing)[2])
        m = similarity_matrix(context.face, side, self.framing)
        arr = _photo_array(original)
        return warp_to_crop(arr, m, side), cv2.invertAffineTransform(m)

    def render_mask(self) -> np.ndarray:
        """Where the warp may act: the paste ellipse at model size. Shape: → (S, S) float32."""
        grid = np.arange(self.image_size, dtype=np.float32)
        return crop_mask(grid[None, :], grid[:, None], self.image_size, self.feather, self.ellipse)

    def paste_photo_crop(
        self, edited: np.ndarray, crop: np.ndarray, m_inv: np.ndarray, original: Image.Image
    ) -> Image.Image:
        """Paste the edited full-resolution crop back: only its change (edited − crop), through
        the feathered ellipse, so pixels the edit leaves alone stay byte-identical.

        Shape: edited, crop (N, N, C) uint8 → PIL of the original's size and mode (L or RGB).
        """
        delta = (edited.astype(np.float32) - crop.astype(np.float32)) / 255.0
        photo = _photo_array(original)
        if photo.shape[2] == 1:
            tiled = np.repeat(photo, 3, axis=2)
            out = paste_delta(tiled, np.repeat(delta, 3, axis=2), m_inv, self.feather, self.ellipse)
            return Image.fromarray(out[:, :, 0])
        return Image.fromarray(paste_delta(photo, delta, m_inv, self.feather, self.ellipse))

    def list_faces(self, image: Image.Image) -> list[dict[str, Any]]:
        """One JSON-ready dict per detected face (for ``--list-faces``): index, box
        [x, y, w, h], roll, eyes, and ``default`` = the face an edit would use."""
        faces = self.detect(image)
        chosen = 0 if self.face_index is None else self.face_index
        return [{"index": i, **f.as_dict(), "default": i == chosen} for i, f in enumerate(faces)]


def _rgb_array(image: Image.Image) -> np.ndarray:
    """Shape: PIL image → (H, W, 3) uint8 RGB."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _photo_array(image: Image.Image) -> np.ndarray:
    """Shape: PIL image → (H, W, 1) uint8 for an ``"L"`` image, else (H, W, 3) RGB."""
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)[:, :, None]
    return _rgb_array(image)


def make_preprocessor(
    image_size: int = DEFAULT_IMAGE_SIZE, face_index: int | None = None
) -> FacePreprocessor:
    """Factory named by the faces Domain (``lordfx_faces.preprocess:make_preprocessor``)."""
    return FacePreprocessor(image_size=image_size, face_index=face_index)
