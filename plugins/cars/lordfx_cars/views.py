"""The view bank of a cars bundle: one content code per known (azimuth, elevation).

Cars3D's content labels are known (24 azimuths x 4 elevations, 15° and 6° apart). The
trainer (``lordfx view-bank``, or automatically when a run with content labels writes its
bundle) stores the mean stage-1 content code of the training images at each view in
``view_bank.safetensors``:

    codes         (K, content_dim) float   what view k is rendered from (mean stage-1 code)
    locate_codes  (K, content_dim) float   optional: what "where" compares E_c(x) with
                                           (mean E_c of the training images at view k)
    locate_whiten (D, D) float             optional: P, both are mapped by x → P·x
                                           first (P·S·Pᵀ ∝ I for S the within-view
                                           covariance of E_c: LDA)
    labels  (K, 2) int64             (azimuth index, elevation index) of view k
    counts  (K,) int64               training images averaged into view k

and the degrees of each index in config.json ``view_bank.values``. Named views are then
G(codes[k], E_y(x)) (paper Eq. 9 with a bank code in place of E_c of a second image), and
"where" is the view whose locate code (or code, without locate_codes) is nearest to E_c(x).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lordfx.errors import LordfxError, UsageError

VIEW_BANK_FILE = "view_bank.safetensors"
FACTORS = ("azimuth", "elevation")


@dataclass(frozen=True)
class View:
    """One entry of the bank: its index and its angles in degrees."""

    index: int
    azimuth: float
    elevation: float
    azimuth_index: int
    elevation_index: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "azimuth": _num(self.azimuth),
            "elevation": _num(self.elevation),
            "azimuth_index": self.azimuth_index,
            "elevation_index": self.elevation_index,
        }

    def label(self) -> str:
        return f"azimuth {_num(self.azimuth)}°, elevation {_num(self.elevation)}°"


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


class ViewBank:
    """Shape: codes (K, content_dim), labels (K, 2) int64, locate_codes (K, content_dim) or
    None; ``azimuths[i]`` / ``elevations[j]`` are the degrees of azimuth index i / elevation
    index j."""

    def __init__(
        self,
        codes: torch.Tensor,
        labels: torch.Tensor,
        azimuths: list[float],
        elevations: list[float],
        locate_codes: torch.Tensor | None = None,
        locate_whiten: torch.Tensor | None = None,
    ) -> None:
        if codes.ndim != 2 or labels.shape != (codes.shape[0], 2):
            raise LordfxError(
                f"view bank: codes {tuple(codes.shape)} and labels {tuple(labels.shape)} "
                "do not match (expected (K, D) and (K, 2))"
            )
        if labels[:, 0].max() >= len(azimuths) or labels[:, 1].max() >= len(elevations):
            raise LordfxError("view bank: labels index past the listed azimuths/elevations")
        if locate_codes is not None and locate_codes.shape != codes.shape:
            raise LordfxError("view bank: locate_codes and codes differ in shape")
        self.codes, self.labels = codes, labels.long()
        self.locate_codes = codes if locate_codes is None else locate_codes
        self.locate_whiten = locate_whiten
        self.azimuths, self.elevations = list(azimuths), list(elevations)
        self.views = [
            View(k, self.azimuths[a], self.elevations[e], a, e)
            for k, (a, e) in enumerate(self.labels.tolist())
        ]

    @classmethod
    def from_bundle(cls, bundle: Any) -> ViewBank:
        """The bank of a loaded :class:`lordfx.bundle.Bundle`, or an error saying how to add one."""
        return cls._from(bundle.path, bundle.info, bundle.extras.get(VIEW_BANK_FILE))

    @classmethod
    def from_dir(cls, path: Path) -> ViewBank:
        """The bank of the bundle directory ``path`` from its config.json and view bank file
        alone (no model weights: cheap, for checking a request before the model loads; the
        sha256 is verified when :func:`lordfx.bundle.load_bundle` loads the bundle)."""
        from safetensors.torch import load_file

        from lordfx.bundle import read_bundle_config

        info = read_bundle_config(path)
        listed = VIEW_BANK_FILE in info.get("files", {}) and (path / VIEW_BANK_FILE).is_file()
        return cls._from(path, info, load_file(str(path / VIEW_BANK_FILE)) if listed else None)

    @classmethod
    def _from(cls, path: Any, info: dict[str, Any], tensors: dict | None) -> ViewBank:
        bank = info.get("view_bank")
        if bank is None or tensors is None:
            raise LordfxError(
                f"{path}: this cars model has no view bank; add one with "
                "`lordfx view-bank RUN_DIR` (then `lordfx ship` again)"
            )
        factors = tuple(bank.get("factors", ()))
        if factors != FACTORS:
            raise LordfxError(
                f"{path}: view bank factors are {factors}, the cars plugin needs {FACTORS}"
            )
        values = bank["values"]
        return cls(
            tensors["codes"].float(),
            tensors["labels"],
            values["azimuth"],
            values["elevation"],
            tensors["locate_codes"].float() if "locate_codes" in tensors else None,
            tensors["locate_whiten"].float() if "locate_whiten" in tensors else None,
        )

    def __len__(self) -> int:
        return len(self.views)

    def _step(self, values: list[float]) -> float:
        diffs = sorted(abs(b - a) for a, b in zip(values, values[1:], strict=False) if b != a)
        return diffs[0] if diffs else 1.0

    def nearest(self, azimuth: float, elevation: float) -> tuple[View, bool]:
        """The bank view nearest to (azimuth, elevation) in degrees and whether it differs
        from the request. Azimuth wraps around (-90 is 270); distance is counted in steps
        of each angle's grid, so the grid's own values always map to themselves."""
        azimuth = float(azimuth) % 360.0
        az = torch.tensor([v.azimuth for v in self.views], dtype=torch.float64)
        el = torch.tensor([v.elevation for v in self.views], dtype=torch.float64)
        d_az = (az - azimuth).abs().remainder(360.0)
        d_az = torch.minimum(d_az, 360.0 - d_az) / self._step(self.azimuths)
        d_el = (el - float(elevation)).abs() / self._step(self.elevations)
        view = self.views[int(torch.argmin(d_az**2 + d_el**2))]
        exact = abs(view.azimuth - azimuth) < 1e-6 and abs(view.elevation - elevation) < 1e-6
        return view, not exact

    def at(self, azimuth_index: int, elevation_index: int) -> View:
        for v in self.views:
            if (v.azimuth_index, v.elevation_index) == (azimuth_index, elevation_index):
                return v
        raise UsageError(
            f"no view at azimuth index {azimuth_index}, elevation index {elevation_index}"
        )

    def locate(self, content_codes: torch.Tensor) -> list[View]:
        """The view whose locate code is nearest to each content code E_c(x) (Euclidean,
        after ``locate_whiten`` when the bank has it): what the model reads.

        Shape: content_codes (N, content_dim) → N views.
        """
        x, bank = content_codes.float(), self.locate_codes.to(content_codes.device).float()
        if self.locate_whiten is not None:
            w = self.locate_whiten.to(x.device).float()
            x, bank = x @ w.T, bank @ w.T
        dist = torch.cdist(x, bank)
        return [self.views[int(k)] for k in dist.argmin(dim=1)]

    def ring(self, elevation_index: int, start_azimuth_index: int = 0) -> list[View]:
        """The views at one elevation in azimuth order, starting at ``start_azimuth_index``
        (or the next azimuth present)."""
        ring = sorted(
            (v for v in self.views if v.elevation_index == elevation_index),
            key=lambda v: (v.azimuth_index - start_azimuth_index) % len(self.azimuths),
        )
        if not ring:
            raise UsageError(f"the view bank has no view at elevation index {elevation_index}")
        return ring

    def describe(self) -> str:
        az = ", ".join(str(_num(a)) for a in self.azimuths)
        el = ", ".join(str(_num(e)) for e in self.elevations)
        return f"azimuths (°): {az}; elevations (°): {el}"
