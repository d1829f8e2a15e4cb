"""The expressions domain's preprocessor: detect → FER2013 framing → model → paste back.

Reuses the faces plugin's Haar detection, roll correction, similarity alignment and feathered
paste-back (:class:`lordfx_faces.preprocess.FacePreprocessor`); only the framing, the paste
ellipse and the colour handling differ. The model is grey (FER2013), so for a colour photo
only the luminance is edited: the model sees the aligned luma crop Y (ITU-R 601, the weights
FER2013's grey and PIL's ``"L"`` use), the generated luma is pasted into the photo's Y
channel, and the change ΔY is added equally to R, G and B. In YCbCr, Cb and Cr are weighted
sums of R, G, B whose weights sum to 0, so adding ΔY to all three keeps the photo's chroma
exactly (up to clipping at 0/255). Pixels outside the paste mask are byte-identical.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from lordfx_faces.align import Framing, align_face
from lordfx_faces.detect import FaceBox, round_half_up, to_grey
from lordfx_faces.paste import Ellipse, paste_back, paste_delta
from lordfx_faces.preprocess import FaceContext, FacePreprocessor
from PIL import Image

# The expressions Domain's image_size (lordfx_expressions/__init__.py); the editor passes
# the bundle's own size.
DEFAULT_IMAGE_SIZE = 48

# FER2013's framing, measured with the faces plugin's Haar detector by
# scripts/measure_fer_framing.py (defaults: 100 random train images per expression, seed 0,
# 4× bicubic upscale, edge-replicated by half the side): a box was found in 580 of 700
# images. Image side / box width: median 1.0105 (IQR 0.951–1.091); image centre below the
# box centre: median 0.0051 box heights (IQR −0.010–0.031); horizontal offset: median
# −0.0025 widths (IQR −0.017–0.013), i.e. none. 3× and 6× upscales agree within 0.01. So a
# FER image is the Haar box itself, where the celeba crop is 2 box widths.
FER_FRAMING = Framing(scale=1.01, drop=0.005)
# The crop is the face, so the mask cannot reach beyond the box as the celeba one does; it
# keeps 4–8 % of the side off the crop edges (the model's weakest pixels) and is fully
# opaque over brows, eyes and mouth (y 0.19–0.85 of the crop at the default feather).
FER_ELLIPSE = Ellipse(centre=(0.5, 0.52), axes=(0.42, 0.44))
# Images whose shorter side is at most this are treated as possible tight face crops (like
# FER2013's own images), which leave the Haar cascade no margin: they are detected the way
# FER_FRAMING was measured, upscaled (bicubic, integer factor) to a shorter side of at
# least DETECT_MIN_SIDE and edge-replicated by half that side on every border. On 150
# random FER2013 test images (48², seed 1) this detect() finds 127 (85 %), side/box median
# 1.02 (IQR 0.96–1.09), matching the framing above; detected as they are, only 61 (41 %)
# are found and their boxes are too small (side/box median 1.17: the crop would zoom in).
TIGHT_CROP_MAX_SIDE = 256
DETECT_MIN_SIDE = 192


@dataclass(frozen=True)
class ExpressionPreprocessor(FacePreprocessor):
    """Faces at FER2013's framing, edited in luminance only (see module doc).

    Inherits detection (``detect``, ``choose``, ``list_faces``) and ``with_face_index``.
    ``color_match`` here matches the generated crop's luma mean/std inside the mask to the
    original face's.
    """

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """Faces in ``image``, largest first, in its pixel coordinates; small images are
        searched upscaled and with an edge-replicated margin (see ``TIGHT_CROP_MAX_SIDE``)."""
        short = min(image.size)
        if short > TIGHT_CROP_MAX_SIDE:
            return super().detect(image)
        k = max(1, math.ceil(DETECT_MIN_SIDE / short))
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if k > 1:
            rgb = cv2.resize(
                rgb, (image.width * k, image.height * k), interpolation=cv2.INTER_CUBIC
            )
        pad = short * k // 2
        padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        return [_unmap(f, pad, k) for f in super().detect(Image.fromarray(padded))]

    def to_model(self, image: Image.Image) -> tuple[torch.Tensor, FaceContext]:
        """Shape: PIL photo (any size, any mode) → ((1, S, S) float in [0, 1] luma,
        :class:`FaceContext` whose ``crop`` is the luma crop tiled to (S, S, 3) uint8).

        Raises :class:`lordfx_faces.preprocess.NoFaceError` when there is no usable face.
        """
        luma = _luma(image)
        faces = self.detect(image)
        index = self.choose(faces)
        crop, m, m_inv = align_face(luma[:, :, None], faces[index], self.image_size, FER_FRAMING)
        tiled = np.repeat(crop, 3, axis=2)
        ctx = FaceContext(faces[index], index, len(faces), image.size, m, m_inv, tiled)
        return torch.from_numpy(crop.transpose(2, 0, 1).copy()).float().div_(255), ctx

    def from_model(
        self, generated: torch.Tensor, context: FaceContext, original: Image.Image
    ) -> Image.Image:
        """Shape: (1, S, S) float in [0, 1] → PIL of the original's size: mode ``"L"`` for
        an ``"L"`` original, else RGB with the original's chroma and the edited luma."""
        if tuple(generated.shape) != (1, self.image_size, self.image_size):
            raise ValueError(
                f"expected a (1, {self.image_size}, {self.image_size}) tensor, "
                f"got {tuple(generated.shape)}"
            )
        if original.size != context.image_size:
            raise ValueError(
                f"original is {original.size}, but the face was found in a "
                f"{context.image_size} image"
            )
        luma = _luma(original)
        new_luma = self._paste_luma(luma, generated, context)
        if original.mode == "L":
            return Image.fromarray(new_luma)
        return Image.fromarray(add_luma_change(np.asarray(original.convert("RGB")), luma, new_luma))

    def from_model_delta(
        self,
        generated: torch.Tensor,
        base: torch.Tensor,
        context: FaceContext,
        original: Image.Image,
    ) -> Image.Image:
        """Residual edit: add ``generated − base`` (the edit's change, e.g. G(c, e_target) −
        G(c, e_own)) to the photo's luma at full resolution, keeping everything the edit
        does not change, and the chroma. Shape: generated and base (1, S, S) in [0, 1] →
        PIL of the original's size (``"L"`` stays ``"L"``). A zero change returns the
        photo's pixels unchanged."""
        expected = (1, self.image_size, self.image_size)
        if tuple(generated.shape) != expected or tuple(base.shape) != expected:
            raise ValueError(
                f"expected two {expected} tensors, got {tuple(generated.shape)} "
                f"and {tuple(base.shape)}"
            )
        if original.size != context.image_size:
            raise ValueError(
                f"original is {original.size}, but the face was found in a "
                f"{context.image_size} image"
            )
        delta = (generated.float() - base.float()).cpu().numpy().transpose(1, 2, 0)
        luma = _luma(original)
        new_luma = paste_delta(
            np.repeat(luma[:, :, None], 3, axis=2),
            np.repeat(delta, 3, axis=2),
            context.M_inv,
            feather=self.feather,
            ellipse=FER_ELLIPSE,
        )[:, :, 0]
        if original.mode == "L":
            return Image.fromarray(new_luma)
        return Image.fromarray(add_luma_change(np.asarray(original.convert("RGB")), luma, new_luma))

    def _paste_luma(
        self, luma: np.ndarray, generated: torch.Tensor, context: FaceContext
    ) -> np.ndarray:
        """Shape: luma (H, W) uint8, generated (1, S, S) → (H, W) uint8 edited luma."""
        gen = generated.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
        out = paste_back(
            np.repeat(luma[:, :, None], 3, axis=2),
            np.repeat(gen, 3, axis=2),
            context.M_inv,
            feather=self.feather,
            color_match=self.color_match,
            reference_crop=context.crop,
            ellipse=FER_ELLIPSE,
        )
        return out[:, :, 0]


def add_luma_change(rgb: np.ndarray, luma: np.ndarray, new_luma: np.ndarray) -> np.ndarray:
    """Apply a luma edit to an RGB photo, keeping its chroma: RGB + (new − old) per pixel.

    Shape: rgb (H, W, 3) uint8, luma and new_luma (H, W) uint8 → (H, W, 3) uint8. Pixels
    whose luma did not change are copied byte for byte.
    """
    delta = new_luma.astype(np.int16) - luma.astype(np.int16)
    out = rgb.copy()
    changed = delta != 0
    out[changed] = np.clip(rgb[changed] + delta[changed, None], 0, 255).astype(np.uint8)
    return out


def _unmap(face: FaceBox, pad: int, k: int) -> FaceBox:
    """A face found in the padded, k× upscaled copy, in the original's pixel coordinates
    (pixel-corner convention, so x ↦ (x − pad) / k)."""
    x, y, w, h = ((face.x - pad) / k, (face.y - pad) / k, face.w / k, face.h / k)
    eyes = None
    if face.eyes is not None:
        eyes = tuple(((ex - pad) / k, (ey - pad) / k) for ex, ey in face.eyes)
    return dataclasses.replace(
        face,
        x=round_half_up(x),
        y=round_half_up(y),
        w=round_half_up(w),
        h=round_half_up(h),
        eyes=eyes,
    )


def _luma(image: Image.Image) -> np.ndarray:
    """Shape: PIL image → (H, W) uint8 luma (an ``"L"`` image as it is)."""
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    return to_grey(np.asarray(image.convert("RGB"), dtype=np.uint8))


def make_preprocessor(
    image_size: int = DEFAULT_IMAGE_SIZE, face_index: int | None = None
) -> ExpressionPreprocessor:
    """Factory named by the expressions Domain
    (``lordfx_expressions.preprocess:make_preprocessor``)."""
    return ExpressionPreprocessor(image_size=image_size, face_index=face_index)
