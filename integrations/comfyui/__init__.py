"""ComfyUI entry point: ComfyUI imports ``custom_nodes/<this folder>/__init__.py`` as a package
and reads its NODE_CLASS_MAPPINGS; the nodes live in ``lordfx_comfyui`` beside this file."""

from .lordfx_comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
