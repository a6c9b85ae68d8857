"""visionzip: training-free visual-token compression for video LLMs, as pure tensor functions.

AOT (anchors + optimal transport, CVPR 2026) reproduces the authors' release exactly by default;
every quirk of the release is a named :class:`AOTConfig` field.
"""

from .aot import (
    CompressionResult,
    compress_video,
    dynamic_segments,
    insert_newlines,
    inter_frame_step,
    merge_inter_frame,
    merge_intra_frame,
    pool_frames,
    pooled_grid,
    select_anchors,
    uniform_segments,
)
from .config import (
    AnchorBudget,
    AOTConfig,
    InterKeep,
    KeyframeEmit,
    NewlinePosition,
    OneTokenNewline,
    OTMass,
    PoolMode,
    Scales,
    Segmentation,
    SinkhornStop,
)
from .flops import prefill_flops
from .presets import get_preset, list_presets, load_config, presets_dir
from .sinkhorn import SinkhornResult, sinkhorn

__version__ = "0.1.0"

__all__ = [
    "AOTConfig",
    "AnchorBudget",
    "CompressionResult",
    "InterKeep",
    "KeyframeEmit",
    "NewlinePosition",
    "OTMass",
    "OneTokenNewline",
    "PoolMode",
    "Scales",
    "Segmentation",
    "SinkhornResult",
    "SinkhornStop",
    "compress_video",
    "dynamic_segments",
    "get_preset",
    "insert_newlines",
    "inter_frame_step",
    "list_presets",
    "load_config",
    "merge_inter_frame",
    "merge_intra_frame",
    "pool_frames",
    "prefill_flops",
    "pooled_grid",
    "presets_dir",
    "select_anchors",
    "sinkhorn",
    "uniform_segments",
]
