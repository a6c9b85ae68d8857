"""visionzip: training-free visual-token compression for video LLMs, as pure tensor functions.

AOT (anchors + optimal transport, CVPR 2026) reproduces the authors' release exactly by default;
every quirk of the release is a named :class:`AOTConfig` field. The baselines (full, pool, random,
VisionZip, DyCoke, FastVID) sit behind the same interface (the method registry, one config class
each, :func:`make_config`, :func:`compress_video`) with the same frames, budget and accounting.
The model describes each video's token layout (:class:`VideoLayout`); every result carries a
:class:`ReductionPlan` that says where each token came from and replays the reduction. Each stage
has one reference implementation; :func:`reference_kernels` switches its faster path off.
"""

from .anchors import select_anchors
from .baselines import Selection, compress_on_grid
from .baselines.dycoke import DyCokeConfig
from .baselines.fastvid import FastVIDConfig
from .baselines.full import FullConfig
from .baselines.pool import PoolConfig, pool_grid_for, pool_grids_for
from .baselines.random import RandomConfig
from .baselines.visionzip import VisionZipConfig
from .config import (
    AnchorBudget,
    AOTConfig,
    InterKeep,
    KeyframeEmit,
    MethodConfig,
    NewlinePosition,
    OneTokenNewline,
    OTMass,
    PoolMode,
    Scales,
    Segmentation,
    SinkhornStop,
)
from .flops import prefill_flops
from .inputs import VideoInput
from .inter import dynamic_segments, inter_frame_step, merge_inter_frame, uniform_segments
from .intra import merge_intra_frame
from .kernels import fast_kernels_enabled, reference_kernels
from .layout import VideoLayout, insert_newlines, pool_frames, pooled_grid
from .methods import calibrate_aot, compress_video, config_class, list_methods, make_config
from .plan import CompressionResult, ReductionPlan
from .presets import config_from_yaml, get_preset, list_presets, load_config, presets_dir
from .registry import MethodSpec, get_method, method_of, register_method, unregister_method
from .sinkhorn import SinkhornResult, sinkhorn

__version__ = "0.1.0"

__all__ = [
    "AOTConfig",
    "MethodConfig",
    "MethodSpec",
    "ReductionPlan",
    "Selection",
    "VideoInput",
    "VideoLayout",
    "compress_on_grid",
    "get_method",
    "method_of",
    "fast_kernels_enabled",
    "reference_kernels",
    "register_method",
    "unregister_method",
    "AnchorBudget",
    "CompressionResult",
    "DyCokeConfig",
    "FastVIDConfig",
    "FullConfig",
    "InterKeep",
    "KeyframeEmit",
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
