"""visionzip: training-free visual-token compression for video LLMs, as pure tensor functions.

AOT (anchors + optimal transport, CVPR 2026) reproduces the authors' release exactly by default;
every quirk of the release is a named :class:`AOTConfig` field. The baselines (full, pool, random,
VisionZip, DyCoke, FastVID) sit behind the same interface (:class:`Method`, one config class each,
:func:`make_config`, :func:`compress_video`) with the same frames, budget and accounting.
"""

from .aot import (
    CompressionResult,
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
from .baselines import pool_grid_for, pool_grids_for
from .config import (
    CONFIG_CLASSES,
    AnchorBudget,
    AOTConfig,
    CompressionConfig,
    DyCokeConfig,
    FastVIDConfig,
    FullConfig,
    InterKeep,
    KeyframeEmit,
    Method,
    NewlinePosition,
    OneTokenNewline,
    OTMass,
    PoolConfig,
    PoolMode,
    RandomConfig,
    Scales,
    Segmentation,
    SinkhornStop,
    VisionZipConfig,
)
from .flops import prefill_flops
from .methods import calibrate_aot, compress_video, config_class, list_methods, make_config
from .presets import config_from_yaml, get_preset, list_presets, load_config, presets_dir
from .sinkhorn import SinkhornResult, sinkhorn

__version__ = "0.1.0"

__all__ = [
    "CONFIG_CLASSES",
    "AOTConfig",
    "AnchorBudget",
    "CompressionConfig",
    "CompressionResult",
    "DyCokeConfig",
    "FastVIDConfig",
    "FullConfig",
    "InterKeep",
    "KeyframeEmit",
    "Method",
    "NewlinePosition",
    "OTMass",
    "OneTokenNewline",
    "PoolConfig",
    "PoolMode",
    "RandomConfig",
    "Scales",
    "Segmentation",
    "SinkhornResult",
    "SinkhornStop",
    "VisionZipConfig",
    "calibrate_aot",
    "compress_video",
    "config_class",
    "config_from_yaml",
    "dynamic_segments",
    "get_preset",
    "insert_newlines",
    "inter_frame_step",
    "list_methods",
    "list_presets",
    "load_config",
    "make_config",
    "merge_inter_frame",
    "merge_intra_frame",
    "pool_frames",
    "pool_grid_for",
    "pool_grids_for",
    "prefill_flops",
    "pooled_grid",
    "presets_dir",
    "select_anchors",
    "sinkhorn",
    "uniform_segments",
]
