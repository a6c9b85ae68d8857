"""Where a checkpoint folder is and how a wrong one is reported: shared by the loaders of
:mod:`llava.model.builder` and :mod:`llava.model.lora_loading`."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download

__all__ = ["CheckpointLayoutError", "resolve_model_path"]


class CheckpointLayoutError(ValueError):
    """A checkpoint folder that is not in LLaVA-NeXT's original on-disk layout."""


def resolve_model_path(model_path: str | Path) -> Path:
    """A local folder as is; otherwise a hub id resolved through the local Hugging Face cache (or a
    download where the machine can reach the hub)."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointLayoutError(f"model path {str(model_path)!r} is a file; expected a checkpoint folder")
    try:
        patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "non_lora_trainables.bin"]  # the last: LoRA folders
        return Path(snapshot_download(str(model_path), allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - report what the hub said, whatever it was
        raise CheckpointLayoutError(
            f"model path {str(model_path)!r} is neither a local folder nor a reachable hub id "
            f"({exc.__class__.__name__}: {exc})"
        ) from exc
