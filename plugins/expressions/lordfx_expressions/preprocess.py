"""The expressions domain's preprocessor: detect → framing → model → paste back.

Reuses the faces plugin's Haar detection, roll correction, similarity alignment and feathered
paste-back (:class:`lordfx_faces.preprocess.FacePreprocessor`); only the framing, the paste
ellipse and the colour handling differ, and both follow the bundle's channels:

- colour (``channels=3``, trained on taiwanese_expressions' posed photos): the RGB crop at
  ``POSED_FRAMING``, pasted back in RGB through ``POSED_ELLIPSE``;
- grey (``channels=1``, FER2013): the luma crop at ``FER_FRAMING``, edited in luminance only.

For a grey model and a colour photo only the luminance is edited: the model sees the aligned
luma crop Y (ITU-R 601, the weights FER2013's grey and PIL's ``"L"`` use), the generated luma
is pasted into the photo's Y channel, and the change ΔY is added equally to R, G and B. In
YCbCr, Cb and Cr are weighted sums of R, G, B whose weights sum to 0, so adding ΔY to all
three keeps the photo's chroma exactly (up to clipping at 0/255). Pixels outside the paste
mask are byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

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
# The domain's default channels when no bundle says otherwise (FER2013 grey).
DEFAULT_CHANNELS = 1

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
# A tight face crop is roughly square; a strip such as 3000×2 would be upscaled 96× (288,000
# px long, 80 s of Haar search for nothing), so only images at most this elongated take the
# tight-crop path (issue 15, hostile input).
TIGHT_CROP_MAX_ASPECT = 2.0

# taiwanese_expressions' posed photos (128², head and shoulders on a light background),
# measured by scripts/measure_posed_framing.py with this module's detect() (all 1,232
# photos, 4 without a face): image side / box width median 1.376 (IQR 1.32–1.44), box
# centre 0.118 box heights below the image centre (IQR 0.088–0.156), horizontal offset
# −0.021 widths (IQR −0.051–0.007), roll 0 in ≥ 95 %. The box spans forehead to chin. The
# colour model's crop is the box plus 7.5 % on each side, centred on it: a side of ~107 px
# that stays inside the 128² photos (no edge replication) and gives the face, not the
# background or shoulders, the model's pixels; on other photos it frames the same face.
POSED_FRAMING = Framing(scale=1.15, drop=0.0)
# The box spans [0.065, 0.935] of that crop; the mask covers it and is fully opaque over
# brows, eyes and mouth (inside 0.75 of the ellipse radius at the default feather).
POSED_ELLIPSE = Ellipse(centre=(0.5, 0.52), axes=(0.42, 0.46))


@dataclass(frozen=True)
class ExpressionPreprocessor(FacePreprocessor):
    """Faces at the framing of the model's training data (see module doc): ``channels=1``
    FER2013's, edited in luminance only; ``channels=3`` the posed photos', edited in RGB.

    Inherits detection (``detect``, ``choose``, ``list_faces``) and ``with_face_index``.
    ``color_match`` matches the generated crop's mean/std inside the mask to the original
    face's (luma for grey, Lab for colour).
    """

    channels: int = DEFAULT_CHANNELS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {self.channels}")

    # render="warp" (lordfx.render) takes the photo's crop in this framing and pastes
    # through this ellipse; the RGB crop moves, a grey model's residual changes luma only.
    @property
    def framing(self) -> Framing:  # type: ignore[override]
        return POSED_FRAMING if self.channels == 3 else FER_FRAMING

    @property
    def ellipse(self) -> Ellipse:  # type: ignore[override]
        return POSED_ELLIPSE if self.channels == 3 else FER_ELLIPSE

    def crop(self, image: Image.Image, face: FaceBox) -> np.ndarray:
        """The model's view of ``face`` in ``image``: (S, S, C) uint8, C = ``channels``
        (the training crops of lordfx_trainer's taiwanese reader are made by this)."""
        if self.channels == 3:
            return align_face(_rgb(image), face, self.image_size, self.framing)[0]
        return align_face(_luma(image)[:, :, None], face, self.image_size, self.framing)[0]

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """Faces in ``image``, largest first, in its pixel coordinates; small images are
        searched upscaled and with an edge-replicated margin (see ``TIGHT_CROP_MAX_SIDE``)."""
        short = min(image.size)
        if short > TIGHT_CROP_MAX_SIDE or max(image.size) > TIGHT_CROP_MAX_ASPECT * short:
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
        """Shape: PIL photo (any size, any mode) → ((C, S, S) float in [0, 1], RGB for a
        colour model, luma for a grey one; :class:`FaceContext` whose ``crop`` is the crop as
        (S, S, 3) uint8, luma tiled for grey).

        Raises :class:`lordfx_faces.preprocess.NoFaceError` when there is no usable face.
        """
        faces = self.detect(image)
        index = self.choose(faces)
        source = _rgb(image) if self.channels == 3 else _luma(image)[:, :, None]
        crop, m, m_inv = align_face(source, faces[index], self.image_size, self.framing)
        tiled = crop if self.channels == 3 else np.repeat(crop, 3, axis=2)
        ctx = FaceContext(faces[index], index, len(faces), image.size, m, m_inv, tiled)
        return torch.from_numpy(crop.transpose(2, 0, 1).copy()).float().div_(255), ctx

    def from_model(
        self, generated: torch.Tensor, context: FaceContext, original: Image.Image
    ) -> Image.Image:
        """Shape: (C, S, S) float in [0, 1] → PIL of the original's size: mode ``"L"`` for
        an ``"L"`` original, else RGB: a colour model's face pasted in RGB, a grey model's
        luma pasted with the original's chroma kept."""
        expected = (self.channels, self.image_size, self.image_size)
        if tuple(generated.shape) != expected:
            raise ValueError(f"expected a {expected} tensor, got {tuple(generated.shape)}")
        if original.size != context.image_size:
            raise ValueError(
                f"original is {original.size}, but the face was found in a "
                f"{context.image_size} image"
            )
        if self.channels == 3:
            gen = generated.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
            out = paste_back(
                _rgb(original),
                gen,
                context.M_inv,
                feather=self.feather,
                color_match=self.color_match,
                reference_crop=context.crop,
                ellipse=self.ellipse,
            )
            return _as_mode(out, original)
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
        G(c, e_own)) to the photo at full resolution (a grey model's to its luma, keeping
        the chroma), keeping everything the edit does not change. Shape: generated and base
        (C, S, S) in [0, 1] → PIL of the original's size (``"L"`` stays ``"L"``). A zero
        change returns the photo's pixels unchanged."""
        expected = (self.channels, self.image_size, self.image_size)
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
        if self.channels == 3:
            out = paste_delta(
                _rgb(original), delta, context.M_inv, feather=self.feather, ellipse=self.ellipse
            )
            return _as_mode(out, original)
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


def _rgb(image: Image.Image) -> np.ndarray:
    """Shape: PIL image → (H, W, 3) uint8 RGB."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _as_mode(rgb: np.ndarray, original: Image.Image) -> Image.Image:
    """An RGB result as an image of the original's kind: ``"L"`` stays ``"L"`` (ITU-R 601
    luma of the result), anything else is RGB."""
    out = Image.fromarray(rgb)
    return out.convert("L") if original.mode == "L" else out


def _luma(image: Image.Image) -> np.ndarray:
    """Shape: PIL image → (H, W) uint8 luma (an ``"L"`` image as it is)."""
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    return to_grey(np.asarray(image.convert("RGB"), dtype=np.uint8))


def bundle_channels(bundle: Path | None = None) -> int:
    """The channels of a bundle's model, from its config.json ``architecture``
    (``DEFAULT_CHANNELS`` when there is none to read). Default bundle: the expressions
    domain's (the one ``lordfx.load("expressions")`` loads), else the plugin's ``model/``."""
    if bundle is None:
        bundle = _domain_bundle()
    path = Path(bundle) / "config.json"
    try:
        return int(json.loads(path.read_text())["architecture"]["channels"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_CHANNELS


def _domain_bundle() -> Path:
    from lordfx_expressions import MODEL_DIR

    try:
        from lordfx.host import get_host

        return Path(get_host().domain("expressions").bundle or MODEL_DIR)
    except Exception:  # noqa: BLE001 - no host / domain: the plugin's own bundle
        return MODEL_DIR


def make_preprocessor(
    image_size: int = DEFAULT_IMAGE_SIZE,
    face_index: int | None = None,
    channels: int | None = None,
) -> ExpressionPreprocessor:
    """Factory named by the expressions Domain
    (``lordfx_expressions.preprocess:make_preprocessor``). ``channels`` None follows the
    expressions domain's bundle (colour or grey), the model the editor loads with it."""
    channels = bundle_channels() if channels is None else channels
    return ExpressionPreprocessor(image_size=image_size, face_index=face_index, channels=channels)
