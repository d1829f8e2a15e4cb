"""The posed-expression judge: a linear probe on frozen ImageNet VGG16 features.

The small CNN of :mod:`expr_classifier`, trained from scratch on ~1,000 posed photos of 24
performers, read 59 % of the held-out performers' real photos correctly (runs/expressions64g).
Expressions are local (mouth corners, brows, eyelids), so this judge keeps where features
are: each image (the model's 64² crop) is resized to 128², run through VGG16 up to relu5_3,
and relu3_3, relu4_3 and relu5_3 are average-pooled to a 4 × 4 grid each (20,480 numbers);
the features are standardised per dimension and a class-balanced multinomial logistic
regression (L2 penalty ``PROBE_L2`` on the standardised weights, L-BFGS) is fitted on the
training images and their mirror images. Nothing but the standardisation and the linear
layer is learned, so ~1,000 images are enough and the fit takes seconds after the features.

Measured on taiwanese_expressions (docs/results.md, `lordfx eval-expressions
runs/expressions64g`): held-out performers' real photos 0.675 vs 0.593 for the CNN + FER2013
judge.

``kind = "vgg-landmarks"`` adds the face's geometry: dlib's 68 landmarks (the iBUG 300-W
shape predictor of the ``eval-faces`` extra, an evaluation tool) found on the crop upsampled
to ``LANDMARK_SIZE``² inside a fixed box (``LANDMARK_MARGIN`` of the side in from each edge:
the crops are already aligned, so no detector runs), centred and scaled to unit norm (136
numbers). After standardisation they are multiplied by ``LANDMARK_GAIN``, which lowers their
L2 penalty by its square: 136 numbers beside 20,480 VGG features would otherwise barely
move the fit. Chosen on expressions64h's split (24 training / 5 held-out performers, 170
held-out photos; one-off script fitting on all training photos, docs/results.md): VGG 0.747,
landmarks alone 0.712, VGG + landmarks at gain 1 / 3 / 10 / 30: 0.747 / 0.753 / 0.800 /
0.794. Through eval-expressions (fit on 90 % of them): 0.794 vs 0.759 for VGG alone.

The VGG16 weights are the ImageNet ones the perceptual loss uses (``lordfx weights``) and
the landmark model is dlib's; neither is stored with the probe (its cache file holds the
standardisation and the linear layer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger("lordfx.eval")

PROBE_SIZE = 128  # the crop is resized to this side before VGG16
PROBE_TAPS = ("relu3_3", "relu4_3", "relu5_3")
PROBE_GRID = 4  # each tap average-pooled to PROBE_GRID × PROBE_GRID
PROBE_L2 = 0.1  # on the standardised features' weights (sum of squares)
_TAP_CHANNELS = {"relu3_3": 256, "relu4_3": 512, "relu5_3": 512}
LANDMARK_SIZE = 256  # the crop is upsampled (PIL bicubic) to this side for dlib's predictor
LANDMARK_MARGIN = 0.1  # the predictor's box: this fraction of the side in from each edge
LANDMARK_GAIN = 10.0  # standardised landmark features × this (module doc)
LANDMARK_DIM = 136  # 68 points × (x, y)
#: part of the cached judge's key: bump when the landmark features change
#: (2: fitted through face_metrics.DlibFaces, PIL bicubic, box 26..230 px of 256)
LANDMARK_FEATURES = 2
PROBE_KINDS = ("vgg-probe", "vgg-landmarks")  # ClassifierSettings.kind values built here

#: (N, C, S, S) float in [0, 1] → (N, LANDMARK_DIM) float
Landmarks = Callable[[torch.Tensor], torch.Tensor]


def feature_dim(landmarks: bool = False) -> int:
    vgg = sum(_TAP_CHANNELS[t] for t in PROBE_TAPS) * PROBE_GRID * PROBE_GRID
    return vgg + (LANDMARK_DIM if landmarks else 0)


class DlibLandmarks:
    """dlib's 68 landmarks of aligned face crops (:class:`face_metrics.DlibFaces` on the
    judge's box, no descriptors), centred and scaled to unit norm.

    Shape: (N, C, S, S) in [0, 1] (C = 1 is tiled to RGB) → (N, 136) float32, the points'
    (x, y) in order, as fractions of the side before centring.
    """

    def __init__(self) -> None:
        from lordfx_trainer.evaluation.face_metrics import DlibFaces, FaceBox

        box = FaceBox(0.5, 0.5, 1.0 - 2.0 * LANDMARK_MARGIN)
        self._faces = DlibFaces(box, LANDMARK_SIZE, descriptors=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().cpu()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        images = (x.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        out = self._faces.analyse(images, descriptors=False)[0].astype(np.float32)
        out -= out.mean(1, keepdims=True)
        out /= np.sqrt((out**2).sum((1, 2), keepdims=True)).clip(1e-6)
        return torch.from_numpy(out.reshape(len(out), LANDMARK_DIM))


class _Frozen:
    """Holds the feature network outside the module tree (not in state_dict, not trained)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net


class VGGProbe(nn.Module):
    """Shape: (N, C, S, S) in [0, 1] (C = 1 is tiled to RGB) → (N, num_classes) logits.

    ``landmarks``: a :data:`Landmarks` function whose features follow VGG16's (kind
    ``"vgg-landmarks"``), or None (kind ``"vgg-probe"``)."""

    def __init__(
        self, num_classes: int, vgg: nn.Module | None = None, landmarks: Landmarks | None = None
    ) -> None:
        super().__init__()
        from lordfx_trainer.losses import IMAGENET_MEAN, IMAGENET_STD, VGG16_TAPS

        if vgg is None:
            from lordfx_trainer.weights import load_vgg16_features

            vgg = load_vgg16_features()
        last = max(VGG16_TAPS[t] for t in PROBE_TAPS)
        self._vgg = _Frozen(vgg[: last + 1].eval().requires_grad_(False))
        self._taps = {VGG16_TAPS[t] for t in PROBE_TAPS}
        self.landmarks = landmarks
        dim = feature_dim(landmarks is not None)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.head = nn.Linear(dim, num_classes)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shape: (N, C, S, S) in [0, 1] → (N, feature_dim(...)) raw (unstandardised)
        features: VGG16's, then the landmarks' when the probe has them."""
        x = x.float().to(self.rgb_mean.device)
        extra = [self.landmarks(x).to(x.device)] if self.landmarks is not None else []
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=PROBE_SIZE, mode="bilinear", align_corners=False)
        x = (x - self.rgb_mean) / self.rgb_std
        out = []
        for i, layer in enumerate(self._vgg.net):
            x = layer(x)
            if i in self._taps:
                out.append(F.adaptive_avg_pool2d(x, PROBE_GRID).flatten(1))
        return torch.cat(out + extra, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.features(x) - self.mean) / self.std)


def build_probe(num_classes: int, kind: str) -> VGGProbe:
    """The unfitted probe of ``kind``: "vgg-probe" or "vgg-landmarks" (dlib's landmarks)."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind must be one of {PROBE_KINDS}, not {kind!r}")
    return VGGProbe(num_classes, landmarks=DlibLandmarks() if kind == "vgg-landmarks" else None)


def probe_features(model: VGGProbe, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Features of uint8 (N, S, S, C) images and of their mirror images: (2N, D) float."""
    from lordfx_trainer.evaluation.expr_classifier import to_float

    out = []
    for flip in (False, True):
        for s in range(0, len(images), batch):
            x = to_float(images[s : s + batch])
            out.append(model.features(x.flip(3) if flip else x))
    return torch.cat(out)


def fit_probe(
    model: VGGProbe, feats: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> None:
    """Standardise on ``feats`` and fit the head (class-weighted cross-entropy + L2); the
    landmark features, if any, are scaled by ``LANDMARK_GAIN`` after standardisation (folded
    into the stored std, so the forward pass is unchanged)."""
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-3)
    if model.landmarks is not None:
        std[-LANDMARK_DIM:] /= LANDMARK_GAIN
    x = (feats - mean) / std
    w = torch.zeros(x.shape[1], model.head.out_features, requires_grad=True)
    b = torch.zeros(model.head.out_features, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, labels, weight=weights) + PROBE_L2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        model.mean.copy_(mean)
        model.std.copy_(std)
        model.head.weight.copy_(w.t())
        model.head.bias.copy_(b)


def train_probe(
    images: np.ndarray,
    labels: np.ndarray,
    s: Any,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    weights: torch.Tensor,
) -> tuple[VGGProbe, dict[str, Any]]:
    """Fit on ``fit_idx`` (images + mirror images) with class ``weights``, report ``val_idx``
    (the split and weights of :func:`expr_classifier.train_classifier`).

    Shape: images (N, S, S, C) uint8, labels (N,) int → (probe in eval mode, record).
    """
    from lordfx_trainer.evaluation.expr_classifier import accuracy_report, predict, to_float

    start = time.time()
    model = build_probe(s.num_classes, s.kind).eval()
    feats = probe_features(model, images[fit_idx])
    y = torch.from_numpy(np.concatenate([labels[fit_idx], labels[fit_idx]]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        fit_probe(model, feats, y, weights)
    report = accuracy_report(
        predict(model, to_float(images[val_idx])), labels[val_idx], range(s.num_classes)
    )
    log.info("expression probe: validation accuracy %.3f", report["accuracy"])
    return model, {
        "val_accuracy": report["accuracy"],
        "val_balanced_accuracy": report["balanced_accuracy"],
        "num_train": len(fit_idx),
        "num_val": len(val_idx),
        "train_seconds": round(time.time() - start, 1),
    }
