"""End-to-end benchmark at real model shapes with random weights (nothing is downloaded): vision tower with
and without score capture, the projector, AOT's compression, LLM prefill and the first token, at full tokens
and at 25 / 15 / 10 % retention, with the time to first token (TTFT) and its limits.

Shapes (:data:`MODELS`): LLaVA-OneVision-7B (SigLIP so400m, 26 layers kept, 27 x 27 = 729 patches per frame,
bilinear 2 x 2 pooling to 196 tokens, one trailing newline; projector mlp2x_gelu 1152 -> 3584; Qwen2-7B:
28 layers, hidden 3584, MLP 18944, 28 heads, 4 KV heads, vocabulary 152064) at 32 frames;
LLaVA-Video-7B (the same stacks; average 2 x 2 pooling to 169 tokens, a newline after each of the 13 rows)
at 64 frames; Qwen2.5-VL-7B (transformers' own vision tower, 32 blocks 1280 wide with 112 px windows and
four full-attention blocks, its 2 x 2 merger; 448 x 448 px frames: 16 x 16 tokens per temporal token of two
frames; Qwen2.5-7B, the same widths as Qwen2-7B) at 32 frames, its score capture at two blocks
(:mod:`llava.model.qwen_vl.scores`). On a CPU two of its blocks are timed, a windowed and a full-attention
one, so the scaled tower time counts full-attention blocks more often than the model has them (a few per
cent more: at 448 px the MLP dominates a block either way); the capture is measured on the full-attention
block, as the default score layers are.

* **On a GPU** (``--device cuda``) every layer of both stacks is built and run, in bfloat16: the figures
  are the whole model's.
* **On a CPU** the whole model does not fit the time, so ``--layers`` layers of each stack (default 1)
  are built at full width and timed, and each stack's time is scaled by its layer count (26 / layers
  for the tower, 28 / layers for the LLM); the table says so. The frame count defaults to 8, which the machine
  can hold; projector, compression and the LM head run whole.

Per model and retention: visual tokens into the LLM (the compression really runs: ``aot@<r>`` on
random features of the model's layout, so the count is the method's), tower ms without and with score
capture (LLaVA's layers 5 and -2: the capture is measured on two layers at full width and added),
compression ms, prefill ms (visual tokens plus ``--text-tokens`` of prompt), first token ms (the LM head
on the last position), TTFT = tower (+ capture and compression when compressing) + projector + prefill
+ first token, its ratio to full tokens, the limit the tower leaves (TTFT_full / (tower + projector +
prefill at that retention + first token): a free compression at that retention), and the overhead share
(capture + compression over the compressed TTFT). Peak memory is the largest peak a measured call needed.

Commands::

    python -m benchmarks.e2e                                # CPU: both models, 8 frames, 1 layer per stack
    python -m benchmarks.e2e --models llava_ov_7b --frames 4 --layers 2 --repeats 2
    python -m benchmarks.e2e --device cuda                  # GPU: the whole models, bf16, 32 / 64 frames
    python -m benchmarks.e2e --quick --json /tmp/e.json     # tiny widths, for tests

Before any allocation the memory the run needs is estimated and compared with what is available; a run
that does not fit stops with the size it needed. Prints a Markdown table per model and writes every
number plus the environment to ``--json`` (default ``runs/bench/e2e.json``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

import visionzip
from benchmarks.compression import (
    LoadMonitor,
    _positive_int,
    bench_device,
    describe,
    environment,
    peak_extra_bytes,
    write_report,
)
from llava.families import DEFAULT_FAMILY, get_family

DEFAULT_JSON = Path("runs/bench/e2e.json")
RETENTIONS = (1.0, 0.25, 0.15, 0.10)
CPU_FRAMES = 8
MB = 1e6
GB = 1e9


@dataclass(frozen=True)
class ModelShape:
    """A LLaVA-NeXT model's stacks as the benchmark builds them."""

    title: str
    frames: int  # as evaluated (GPU default)
    vision_layers: int
    vision_hidden: int
    vision_mlp: int
    vision_heads: int
    image_size: int
    patch_size: int
    llm_layers: int
    hidden: int
    mlp: int
    heads: int
    kv_heads: int
    vocab: int
    pool_mode: str
    newline_position: str
    family: str = DEFAULT_FAMILY  # a registered family: its layout picks the stacks built
    score_layers: tuple[int, int] | None = None  # None: the family's default score layers

    def __post_init__(self) -> None:
        if self.score_layers is None:
            object.__setattr__(self, "score_layers", get_family(self.family).score_layers(None))

    @property
    def hf(self) -> bool:
        """Transformers' Qwen2.5-VL vision tower (merger inside) rather than SigLIP + projector: a family
        in the Hugging Face layout."""
        return get_family(self.family).layout == "hf"

    @property
    def grid(self) -> tuple[int, int]:
        """The grid the compressor sees per layout frame: patches for LLaVA, merged tokens for Qwen2.5-VL."""
        side = self.image_size // self.patch_size
        return (side // 2, side // 2) if self.hf else (side, side)


_LLAVA_7B = dict(vision_layers=26, vision_hidden=1152, vision_mlp=4304, vision_heads=16, image_size=384, patch_size=14,
                 llm_layers=28, hidden=3584, mlp=18944, heads=28, kv_heads=4, vocab=152064)
MODELS: dict[str, ModelShape] = {
    "llava_ov_7b": ModelShape("LLaVA-OneVision-7B", 32, **_LLAVA_7B, pool_mode="bilinear",
                              newline_position="one_token"),
    "llava_video_7b": ModelShape("LLaVA-Video-7B-Qwen2", 64, **_LLAVA_7B, pool_mode="average", newline_position="grid",
                                 family="llava_video"),
    # Qwen2.5-VL-7B at 448 x 448 px: 32 x 32 patches, 2 x 2 merger -> 16 x 16 tokens per temporal token of 2 frames;
    # vision 1280 wide, 32 blocks (windowed, full attention at 7/15/23/31), MLP 3420; Qwen2.5-7B as Qwen2-7B
    "qwen2_5_vl_7b": ModelShape("Qwen2.5-VL-7B-Instruct", 32, vision_layers=32, vision_hidden=1280, vision_mlp=3420,
                                vision_heads=16, image_size=448, patch_size=14, llm_layers=28, hidden=3584, mlp=18944,
                                heads=28, kv_heads=4, vocab=152064, pool_mode="none", newline_position="no_token",
                                score_layers=(7, 31), family="qwen2_5_vl"),
}
#: tiny widths with the real grid, for tests (``--quick``)
QUICK = dict(vision_layers=2, vision_hidden=64, vision_mlp=128, vision_heads=4, image_size=54, patch_size=2,
             llm_layers=2, hidden=64, mlp=128, heads=4, kv_heads=2, vocab=512)
#: Qwen2.5-VL's quick widths: patch 14 and its 112 px windows stay (a 224 px frame: 16 x 16 patches, 8 x 8 merged)
QUICK_QWEN = dict(QUICK, image_size=224, patch_size=14, score_layers=(0, 1))


def model_shape(name: str, *, quick: bool = False) -> ModelShape:
    if name not in MODELS:
        raise ValueError(f"model shape {name!r} is unknown; expected one of {sorted(MODELS)}")
    shape = MODELS[name]
    if not quick:
        return shape
    return replace(shape, **(QUICK_QWEN if shape.hf else QUICK))


# --------------------------------------------------------------------------------------------------
# memory


def _vision_params(s: ModelShape, layers: int) -> int:
    h, m = s.vision_hidden, s.vision_mlp
    return layers * (4 * h * h + 2 * h * m + 9 * h + m) + 3 * s.patch_size**2 * h + s.grid[0] * s.grid[1] * h


def _llm_params(s: ModelShape, layers: int) -> int:
    h, kv = s.hidden, s.hidden // s.heads * s.kv_heads
    return layers * (2 * h * h + 2 * h * kv + 3 * h * s.mlp + 2 * h)


def needed_bytes(s: ModelShape, *, frames: int, vision_layers: int, llm_layers: int, text_tokens: int,
                 itemsize: int) -> int:
    """Weights of the built layers, projector and LM head, plus the largest activations (frames' features
    a few times over, the LLM's widest intermediate at full tokens)."""
    n = (s.image_size // s.patch_size) ** 2 // (2 if s.hf else 1)  # tower tokens per sampled frame
    weights = (_vision_params(s, vision_layers) + s.vision_hidden * s.hidden + s.hidden * s.hidden
               + _llm_params(s, llm_layers) + s.hidden * s.vocab)
    tokens = frames * n + text_tokens
    activations = 6 * frames * n * max(s.vision_mlp, s.hidden) + 4 * tokens * s.mlp
    return (weights + activations) * itemsize


# --------------------------------------------------------------------------------------------------
# stacks


def build_stacks(s: ModelShape, *, vision_layers: int, llm_layers: int, device: torch.device, dtype: torch.dtype,
                 seed: int) -> dict[str, Any]:
    """The tower (this package's SigLIP tower), the projector (this package's builder), the LLM layers
    (transformers' ``Qwen2Model``, no embedding table: it is fed embeddings) and the LM head, random."""
    from types import SimpleNamespace

    from transformers import Qwen2Config, Qwen2Model

    from llava.model.multimodal_encoder.siglip_encoder import SigLipVisionTower, so400m_vision_config
    from llava.model.multimodal_projector.builder import build_vision_projector

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    # built in place on the device, in the run's dtype (no float32 copy of 7B on the host)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            tower = projector = None
            if not s.hf:  # Qwen2.5-VL's tower (with its merger) is build_qwen_tower's
                tower = SigLipVisionTower(so400m_vision_config(
                    hidden_size=s.vision_hidden, intermediate_size=s.vision_mlp, num_hidden_layers=vision_layers,
                    num_attention_heads=s.vision_heads, image_size=s.image_size, patch_size=s.patch_size,
                )).eval()
                projector = build_vision_projector(SimpleNamespace(
                    mm_projector_type="mlp2x_gelu", mm_hidden_size=s.vision_hidden, hidden_size=s.hidden,
                )).eval()
            llm = Qwen2Model(Qwen2Config(
                vocab_size=16, hidden_size=s.hidden, intermediate_size=s.mlp, num_hidden_layers=llm_layers,
                num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, max_position_embeddings=32768,
            )).eval()
            head = torch.nn.Linear(s.hidden, s.vocab, bias=False)
    finally:
        torch.set_default_dtype(previous)
    tower, projector, llm, head = (None if m is None else m.to(device=device, dtype=dtype)
                                   for m in (tower, projector, llm, head))
    return {"tower": tower, "projector": projector, "llm": llm, "head": head}


def build_qwen_tower(s: ModelShape, *, layers: int, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    """transformers' own Qwen2.5-VL vision tower at full width with ``layers`` blocks: windowed ones and, from
    the second on, every other one with full attention (the 7B has 28 windowed and 4 full of 32)."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    torch.manual_seed(seed)
    config = Qwen2_5_VLVisionConfig(
        depth=layers, hidden_size=s.vision_hidden, intermediate_size=s.vision_mlp, num_heads=s.vision_heads,
        out_hidden_size=s.hidden, patch_size=s.patch_size, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
        fullatt_block_indexes=list(range(1, layers, 2)) if layers > 1 else [], in_channels=3,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            tower = Qwen2_5_VisionTransformerPretrainedModel(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return tower.to(device=device, dtype=dtype)


def layout_of(s: ModelShape, frames: int, device: torch.device, dtype: torch.dtype) -> visionzip.VideoLayout:
    if s.hf:  # one layout frame per temporal token, the merged grid, no pooling, no newline
        return visionzip.VideoLayout(frames=frames // 2, grid=s.grid, pool_mode="none", newline_position="no_token",
                                     temporal_patch=2)
    newline = torch.randn(s.hidden, device=device, dtype=dtype)
    return visionzip.VideoLayout(frames=frames, grid=s.grid, pool_mode=s.pool_mode, pool_stride=2,
                                 newline_position=s.newline_position, newline=newline)


# --------------------------------------------------------------------------------------------------
# measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, *, repeats: int, device: torch.device) -> dict[str, Any]:
    """Peak memory of a first (warm-up) call, then the median and min of ``repeats`` timed calls (ms)."""
    peak = peak_extra_bytes(fn, device=device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times,
            "peak_extra_mb": None if peak is None else peak / MB}


@torch.no_grad()
def bench_model(name: str, s: ModelShape, *, frames: int, vision_layers: int, llm_layers: int, text_tokens: int,
                repeats: int, device: torch.device, dtype: torch.dtype, seed: int) -> dict[str, Any]:
    stacks = build_stacks(s, vision_layers=vision_layers, llm_layers=llm_layers, device=device, dtype=dtype, seed=seed)
    llm, head = stacks["llm"], stacks["head"]
    g = torch.Generator().manual_seed(seed)
    if s.hf:
        from llava.model.qwen_vl.scores import video_features_with_scores

        tower = build_qwen_tower(s, layers=vision_layers, device=device, dtype=dtype, seed=seed)
        side = s.image_size // s.patch_size
        grid_thw = torch.tensor([[frames // 2, side, side]], device=device)
        pixels = torch.randn(frames // 2 * side * side, 3 * 2 * s.patch_size**2, generator=g)
        pixels = pixels.to(device=device, dtype=dtype)
        layers = [1] if vision_layers >= 2 else [0]  # a full-attention block, as the default score layers are
        plain = timed(lambda: tower(pixels, grid_thw=grid_thw), repeats=repeats, device=device)
        scored = timed(lambda: video_features_with_scores(tower, pixels, grid_thw, layers), repeats=repeats,
                       device=device)
        merged = tower(pixels, grid_thw=grid_thw).pooler_output  # (t * h' * w', D): the merger is inside the tower
        proj = {"median_ms": 0.0, "min_ms": 0.0, "times_ms": [], "peak_extra_mb": None}  # no separate projector
        projected = merged.view(frames // 2, s.grid[0] * s.grid[1], -1)
        frames_c = frames // 2
    else:
        tower, projector = stacks["tower"], stacks["projector"]
        pixels = (torch.rand(frames, 3, s.image_size, s.image_size, generator=g) * 2 - 1).to(device=device, dtype=dtype)
        layers = tower.resolve_score_layers((0, 1)) if vision_layers >= 2 else tower.resolve_score_layers((0, 0))
        plain = timed(lambda: tower(pixels), repeats=repeats, device=device)
        scored = timed(lambda: tower.forward_with_scores(pixels, score_layers=layers), repeats=repeats, device=device)
        features = tower(pixels)  # (F, N, C)
        proj = timed(lambda: projector(features), repeats=repeats, device=device)
        projected = projector(features)  # (F, N, D)
        frames_c = frames
    # the capture's cost is that of its (up to) two layers, whatever the tower's depth
    capture_ms = max(scored["median_ms"] - plain["median_ms"], 0.0) * (2 / len(set(layers)))
    vision_scale = s.vision_layers / vision_layers
    tower_ms = plain["median_ms"] * vision_scale
    n = s.grid[0] * s.grid[1]
    shallow = torch.rand(frames_c, n, generator=g).to(device)
    deep = torch.rand(frames_c, n, generator=g).to(device)
    layout = layout_of(s, frames, device, dtype)
    llm_scale = s.llm_layers / llm_layers
    head_run = timed(lambda: head(torch.randn(1, 1, s.hidden, device=device, dtype=dtype)), repeats=repeats,
                     device=device)
    rows = []
    for r in RETENTIONS:
        if r == 1.0:
            visual = layout.num_tokens
            comp = None
        else:
            cfg = visionzip.load_config(f"aot@{r}")

            def call(c=cfg):
                return visionzip.compress_video(projected, shallow, deep, config=c, layout=layout)

            comp = timed(call, repeats=repeats, device=device)
            visual = int(call().tokens.shape[0])
        length = visual + text_tokens
        embeds = torch.randn(1, length, s.hidden, device=device, dtype=dtype, generator=None)
        prefill = timed(lambda e=embeds: llm(inputs_embeds=e, use_cache=True), repeats=repeats, device=device)
        prefill_ms = prefill["median_ms"] * llm_scale
        # one decode step after this prompt: a token through the LLM over the prompt's KV cache (cropped back
        # after each call, so every timed step sees the same cache), then the LM head
        cache = llm(inputs_embeds=embeds, use_cache=True).past_key_values
        token = torch.randn(1, 1, s.hidden, device=device, dtype=dtype)

        def step(c=cache, token=token):
            llm(inputs_embeds=token, past_key_values=c, use_cache=True)
            c.crop(-1)  # transformers' crop takes the tokens to remove, as a negative count

        decode = timed(step, repeats=repeats, device=device)
        if cache.get_seq_length() != length:  # every step must have seen the prompt's cache alone
            raise RuntimeError(f"the decode step left a cache of {cache.get_seq_length()} tokens; expected {length}")
        decode_ms = decode["median_ms"] * llm_scale + head_run["median_ms"]
        del cache
        compress_ms = 0.0 if comp is None else comp["median_ms"]
        capture = 0.0 if r == 1.0 else capture_ms
        first_ms = head_run["median_ms"]
        ttft = tower_ms + capture + compress_ms + proj["median_ms"] + prefill_ms + first_ms
        free = tower_ms + proj["median_ms"] + prefill_ms + first_ms  # the same retention, capture and compression free
        peaks = [x["peak_extra_mb"] for x in (plain, scored, proj, prefill, head_run, *([comp] if comp else []))
                 if x["peak_extra_mb"] is not None]
        rows.append({"retention": r, "visual_tokens": visual, "prompt_tokens": length, "tower_ms": tower_ms,
                     "capture_ms": capture, "compression_ms": compress_ms, "projector_ms": proj["median_ms"],
                     "prefill_ms": prefill_ms, "first_token_ms": first_ms, "ttft_ms": ttft, "free_ttft_ms": free,
                     "decode_ms_per_token": decode_ms,
                     "peak_mb": max(peaks) if peaks else None,
                     "measured": {"prefill": prefill, "decode_step": decode,
                                  **({"compression": comp} if comp else {})}})
    full = rows[0]
    for row in rows:
        row["ttft_ratio"] = full["ttft_ms"] / row["ttft_ms"]
        row["limit_ratio"] = full["ttft_ms"] / row["free_ttft_ms"]
        row["overhead_share"] = (row["capture_ms"] + row["compression_ms"]) / row["ttft_ms"]
        row["decode_ratio"] = full["decode_ms_per_token"] / row["decode_ms_per_token"]
    tower_limit = full["ttft_ms"] / (tower_ms + proj["median_ms"] + head_run["median_ms"])
    return {
        "model": name, "title": s.title, "shape": asdict(s), "frames": frames,
        "timed_layers": {"vision": vision_layers, "llm": llm_layers},
        "scaled": vision_layers < s.vision_layers or llm_layers < s.llm_layers,
        "scale": {"vision": vision_scale, "llm": llm_scale},
        "tower": {"plain": plain, "with_scores": scored, "capture_ms_two_layers": capture_ms},
        "projector": proj, "head": head_run, "rows": rows,
        "tower_limit_ratio": tower_limit,
    }


# --------------------------------------------------------------------------------------------------
# report

HEADER = ("| retention | visual tokens | tower ms | capture ms | compression ms | prefill ms | first token ms "
          "| TTFT ms | TTFT ratio | limit at this retention | overhead share | decode ms/token | decode ratio "
          "| peak MB |")


def table(report: dict[str, Any]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in report["rows"]:
        label = "full" if r["retention"] == 1.0 else f"{r['retention']:.0%}"
        peak = "n/a" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(
            f"| {label} | {r['visual_tokens']} | {r['tower_ms']:.0f} | {r['capture_ms']:.0f} "
            f"| {r['compression_ms']:.0f} | {r['prefill_ms']:.0f} | {r['first_token_ms']:.1f} | {r['ttft_ms']:.0f} "
            f"| {r['ttft_ratio']:.2f}× "
            f"| {r['limit_ratio']:.2f}× | {r['overhead_share']:.1%} | {r['decode_ms_per_token']:.2f} "
            f"| {r['decode_ratio']:.2f}× | {peak} |"
        )
    return "\n".join(lines)


def caption(report: dict[str, Any]) -> str:
    t = report["timed_layers"]
    s = report["shape"]
    how = (f"scaled: {t['vision']} of {s['vision_layers']} tower layers and {t['llm']} of {s['llm_layers']} LLM layers "
           f"timed at full width, times × {report['scale']['vision']:.0f} and × {report['scale']['llm']:.0f}"
           if report["scaled"] else "every layer built and timed")
    return (f"{report['title']}, {report['frames']} frames ({how}); with a free LLM TTFT could fall at most "
            f"{report['tower_limit_ratio']:.2f}× (the tower's limit)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available (bf16, whole models), else cpu (fp32, scaled)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated model shapes: {', '.join(MODELS)}")
    parser.add_argument("--frames", type=_positive_int, default=None,
                        help=f"frames (default: the model's own on CUDA, {CPU_FRAMES} on CPU)")
    parser.add_argument("--layers", type=_positive_int, default=None,
                        help="layers of each stack to build and time (default: all on CUDA, 1 on CPU)")
    parser.add_argument("--text-tokens", type=_positive_int, default=64,
                        help="prompt tokens besides the video (default 64)")
    parser.add_argument("--repeats", type=_positive_int, default=None,
                        help="timed calls after a warm-up (default 3; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output JSON (default {DEFAULT_JSON})")
    parser.add_argument("--quick", action="store_true", help="tiny widths on the real grids, 2 frames, for tests")
    args = parser.parse_args(argv)

    device, dtype = bench_device(parser, args.device)
    from benchmarks.tower import available_bytes  # its module loads the SigLIP tower (and transformers)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        shapes = {name: model_shape(name, quick=args.quick) for name in names}
    except ValueError as err:
        parser.error(str(err))
    repeats = args.repeats or (1 if args.quick else 3)
    plans = {}
    for name, s in shapes.items():
        frames = args.frames or (2 if args.quick else s.frames if device.type == "cuda" else CPU_FRAMES)
        if frames < 2:
            parser.error(f"--frames {frames}: expected at least 2 (AOT works across frames)")
        # on a CPU one block per stack; Qwen2.5-VL's tower two (a windowed and a full-attention one)
        cpu_blocks = 2 if s.hf else 1
        vision_layers = min(args.layers or (s.vision_layers if device.type == "cuda" else cpu_blocks), s.vision_layers)
        llm_layers = min(args.layers or (s.llm_layers if device.type == "cuda" else 1), s.llm_layers)
        need = needed_bytes(s, frames=frames, vision_layers=vision_layers, llm_layers=llm_layers,
                            text_tokens=args.text_tokens, itemsize=torch.finfo(dtype).bits // 8)
        have = available_bytes(device)
        if need > 0.9 * have:
            parser.error(f"{name} at {frames} frames with {vision_layers} + {llm_layers} layers needs about "
                         f"{need / GB:.1f} GB; {have / GB:.1f} GB are available: expected fewer --frames or --layers")
        plans[name] = (s, frames, vision_layers, llm_layers)

    env = environment(device, dtype)
    monitor = LoadMonitor()
    reports = []
    for name, (s, frames, vision_layers, llm_layers) in plans.items():
        reports.append(bench_model(name, s, frames=frames, vision_layers=vision_layers, llm_layers=llm_layers,
                                   text_tokens=args.text_tokens, repeats=repeats, device=device, dtype=dtype,
                                   seed=args.seed))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    env["load"] = monitor.report()
    print(describe(env, repeats))
    for report in reports:
        print()
        print(caption(report))
        print()
        print(table(report))
    out = {"environment": env, "settings": {"repeats": repeats, "text_tokens": args.text_tokens, "seed": args.seed,
                                            "quick": args.quick, "models": names}, "models": reports}
    print()
    write_report(args.json, out, env["load"])
    return out


if __name__ == "__main__":
    main()
