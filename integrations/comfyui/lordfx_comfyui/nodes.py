"""lordfx as ComfyUI nodes: swap pose, expression, transfer in any installed domain, and car
views / turntables.

ComfyUI's V1 node convention: each class declares ``INPUT_TYPES`` (a classmethod),
``RETURN_TYPES``, ``FUNCTION`` (the method to call) and ``CATEGORY``; the pack exports
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``. Images are IMAGE tensors
(B, H, W, C) float in [0, 1]; a batch is edited image by image, a second input pairs up with it
(equal batches) or applies to all of it (a batch of 1). Editors are loaded once per domain and
kept (:mod:`lordfx_comfyui.models`).
"""

from __future__ import annotations

from typing import Any

import torch

from . import models
from .images import pair_batches, resize_square, to_image, to_pils

CATEGORY = "lordfx"
RENDER = (["warp", "generate"], {"default": "warp"})
FACE = ("INT", {"default": -1, "min": -1, "max": 64, "tooltip": "-1: the largest face"})
SIZE = ("INT", {"default": 0, "min": 0, "max": 2048, "tooltip": "0: the model's own size"})


def _face(face_index: int) -> int | None:
    return None if face_index < 0 else face_index


def _editor(node: str, domain: str) -> Any:
    """The cached editor of ``domain``; an error names the node (no such plugin, or a plugin
    without a trained model: lordfx's own message says what to do)."""
    try:
        return models.editor(domain)
    except Exception as exc:
        raise RuntimeError(f"lordfx {node}: {exc}") from exc


def _each(node: str, n: int, edit: Any) -> list[Any]:
    """``edit(k)`` for k in range(n); an error names the node and the image of the batch."""
    out = []
    for k in range(n):
        try:
            out.append(edit(k))
        except Exception as exc:
            where = f" (image {k} of the batch of {n})" if n > 1 else ""
            raise RuntimeError(f"lordfx {node}{where}: {exc}") from exc
    return out


class LordfxSwapPose:
    """Keep each image's identity, take the reference's head pose and expression (faces):
    x = G(E_c(reference), E_y(image)), rendered back into the photo at its resolution."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {"image": ("IMAGE",), "pose_reference": ("IMAGE",), "render": RENDER},
            "optional": {"face_index": FACE},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "swap_pose"
    CATEGORY = CATEGORY

    def swap_pose(
        self, image: torch.Tensor, pose_reference: torch.Tensor, render: str, face_index: int = -1
    ) -> tuple[torch.Tensor]:
        ed = _editor("Swap pose", "faces")
        faces, refs = to_pils(image), to_pils(pose_reference, "pose_reference")
        pairs = pair_batches(len(faces), len(refs), ("image", "pose_reference"))
        codes: dict[int, torch.Tensor] = {}

        def edit(k: int) -> Any:
            i, j = pairs[k]
            if j not in codes:  # one reference for the batch: encoded once
                codes[j] = ed.encode_content_file(refs[j])
            return ed.swap_content_file(faces[i], codes[j], _face(face_index), render=render)

        return (to_image(_each("Swap pose", len(pairs), edit)),)


class LordfxExpression:
    """Give each face another expression, with a strength in [0, 1] (0 = the photo):
    x = G(E_c(x), e_y + strength (e_name - e_y)), e_y = E_y(x)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        names = models.class_names("expressions") or ["(install lordfx-expressions)"]
        return {
            "required": {
                "image": ("IMAGE",),
                "expression": (names, {"default": "happy" if "happy" in names else names[0]}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05}),
                "render": RENDER,
            },
            "optional": {"face_index": FACE},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "set_expression"
    CATEGORY = CATEGORY

    def set_expression(
        self,
        image: torch.Tensor,
        expression: str,
        strength: float,
        render: str,
        face_index: int = -1,
    ) -> tuple[torch.Tensor]:
        ed = _editor("Expression", "expressions")
        pils = to_pils(image)

        def edit(i: int) -> Any:
            return ed.set_expression(
                pils[i], expression, strength=strength, face_index=_face(face_index), render=render
            )

        return (to_image(_each("Expression", len(pils), edit)),)


class LordfxTransfer:
    """LORD's transfer in any installed domain: the class of ``class_image`` (identity, car
    model, ...) with the content of ``content_image`` (pose, view, ...): G(E_c(content), E_y(class))."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        names = models.domain_names(with_model=True) or ["(no domain with a trained model)"]
        return {
            "required": {
                "class_image": ("IMAGE",),
                "content_image": ("IMAGE",),
                "domain": (names, {"default": names[0]}),
            },
            "optional": {"size": SIZE},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "transfer"
    CATEGORY = CATEGORY

    def transfer(
        self, class_image: torch.Tensor, content_image: torch.Tensor, domain: str, size: int = 0
    ) -> tuple[torch.Tensor]:
        ed = _editor("Transfer", domain)
        classes, contents = (
            to_pils(class_image, "class_image"),
            to_pils(content_image, "content_image"),
        )
        pairs = pair_batches(len(classes), len(contents), ("class_image", "content_image"))
        if len(contents) == 1:  # one content for all: encode it once, transfer as a batch
            out = ed.transfer_many(classes, ed.encode_content([contents[0]]))
        else:
            out = _each(
                "Transfer",
                len(pairs),
                lambda k: ed.transfer(classes[pairs[k][0]], contents[pairs[k][1]]),
            )
        return (to_image([resize_square(im, size) if size else im for im in out]),)


def _cars(node: str) -> Any:
    """The cars editor, or an error that says what is missing: the plugin, its trained model
    ("the cars plugin has no trained model yet ..."), or the view API."""
    ed = _editor(node, "cars")
    if not (hasattr(ed, "view") and hasattr(ed, "turntable")):
        raise RuntimeError(f"lordfx {node}: the installed cars plugin has no view/turntable")
    return ed


class LordfxCarsView:
    """Each car image seen from (azimuth, elevation) in degrees: the nearest view the cars
    model knows (its view bank)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        return {
            "required": {
                "image": ("IMAGE",),
                "azimuth": ("FLOAT", {"default": 0.0, "min": -360.0, "max": 360.0, "step": 15.0}),
                "elevation": ("FLOAT", {"default": 0.0, "min": -90.0, "max": 90.0, "step": 10.0}),
            },
            "optional": {"size": SIZE},
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "view"
    CATEGORY = CATEGORY

    def view(
        self, image: torch.Tensor, azimuth: float, elevation: float, size: int = 0
    ) -> tuple[torch.Tensor]:
        ed = _cars("Cars view")
        pils = to_pils(image)

        def edit(i: int) -> Any:
            return resize_square(ed.view(pils[i], azimuth=azimuth, elevation=elevation), size)

        return (to_image(_each("Cars view", len(pils), edit)),)


class LordfxCarsTurntable:
    """Turntable frames of each car image: every azimuth the model knows, starting from the
    image's own view; a batch of B images gives B x frames images, image by image."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802
        return {
            "required": {"image": ("IMAGE",)},
            "optional": {
                "elevation": (
                    "FLOAT",
                    {
                        "default": -1.0,
                        "min": -1.0,
                        "max": 90.0,
                        "step": 10.0,
                        "tooltip": "-1: the image's own",
                    },
                ),
                "size": SIZE,
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "turntable"
    CATEGORY = CATEGORY

    def turntable(
        self, image: torch.Tensor, elevation: float = -1.0, size: int = 0
    ) -> tuple[torch.Tensor]:
        ed = _cars("Cars turntable")
        pils = to_pils(image)
        kwargs = {} if elevation < 0 else {"elevation": elevation}

        def edit(i: int) -> list[Any]:
            return [resize_square(f, size) for f in ed.turntable(pils[i], **kwargs)]

        frames = [f for batch in _each("Cars turntable", len(pils), edit) for f in batch]
        return (to_image(frames),)


NODE_CLASS_MAPPINGS = {
    "LordfxSwapPose": LordfxSwapPose,
    "LordfxExpression": LordfxExpression,
    "LordfxTransfer": LordfxTransfer,
    "LordfxCarsView": LordfxCarsView,
    "LordfxCarsTurntable": LordfxCarsTurntable,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LordfxSwapPose": "lordfx Swap pose (faces)",
    "LordfxExpression": "lordfx Expression",
    "LordfxTransfer": "lordfx Transfer (any domain)",
    "LordfxCarsView": "lordfx Cars view",
    "LordfxCarsTurntable": "lordfx Cars turntable frames",
}
