"""Benchmark of :func:`visionzip.compress_video` at LLaVA shapes against "the floor".

The floor is the one product AOT cannot avoid: the cosine similarities between every pruned token
and every anchor of a frame, i.e. one ``torch.bmm`` of the pruned features (F, N - K, D) with the
transposed anchors (F, K, D) -> (F, N - K, K), same dtype and device. ``ratio = median / floor``.
Baseline presets (``method:`` other than ``aot``, e.g. ``visionzip_10pct``) run through the same
:func:`visionzip.compress_video`; their floor is the same product with K = the method's tokens per
frame on the unpooled grid (``round(retention * N)``, at least 1, at most N - 1), for comparison.
``--stages`` times AOT's stages, so its first preset must be an AOT one.

AOT presets also time the merge's two products (``products``), written here with plain torch calls
on stand-in weights: the dot products of every token of a frame with its anchors, (F, N, D) x
(F, D, K), and the merged frame's kept pooled cells formed from the frame, (F, kept, N) x (F, N, D)
per frame with its (F, N, K) x (F, K, kept) mixing matrix, ``kept`` each frame's kept cells in the
result (``pooled_mask``; ``kept_cells_mean`` per frame). On a CPU in float32 that is the product
AOT's step runs (:func:`visionzip.intra.kept_cells`); elsewhere the step pools the merged frames, and
the column is the two products a step forming the kept cells alone would need.
``products_ratio = products median / floor``: the part of the ratio these two products take alone.

Shapes: LLaVA-OneVision-7B presets at 32 frames, LLaVA-Video-7B (average pooling, grid newlines)
at 64 frames; N = 729 tokens per frame (27x27 SigLIP grid), D = 3584. float32 on CPU, bfloat16 on
CUDA. Inputs are seeded, of the families in :data:`INPUT_FAMILIES` (``--inputs``; default ``smooth``:
a smooth random field over (time, row, col) plus noise), with random positive attention scores.

Commands::

    python -m benchmarks.compression                       # default: 3 presets, 5 repeats, auto device
    python -m benchmarks.compression --stages              # also time every stage of the first preset
    python -m benchmarks.compression --device cpu --presets paper_ov_10pct --repeats 3
    python -m benchmarks.compression --quick --json /tmp/b.json   # small shapes (D=256, 1 repeat), for tests
    python -m benchmarks.compression --inputs smooth,independent,shared_base   # every preset on every input family

Prints a Markdown table (paste into docs/benchmarks.md) and writes every number plus the
environment to ``--json`` (default ``runs/bench/compress.json``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as Fn

from visionzip import (
    AOTConfig,
    MethodConfig,
    NewlinePosition,
    PoolMode,
    Segmentation,
    compress_video,
    dynamic_segments,
    get_preset,
    insert_newlines,
    merge_inter_frame,
    merge_intra_frame,
    pool_frames,
    pooled_grid,
    select_anchors,
)

GRID = (27, 27)  # SigLIP so400m, 384 px, patch 14
DIM = 3584  # LLM width of the 7B models
QUICK_DIM = 256
OV_FRAMES = 32  # LLaVA-OneVision as evaluated by the paper
VIDEO_FRAMES = 64  # LLaVA-Video (average pooling) as evaluated by the paper
DEFAULT_PRESETS = ("paper_ov_10pct", "paper_ov_10pct_long", "paper_video_k180")
DEFAULT_JSON = Path("runs/bench/compress.json")
MB = 1e6
GB = 1e9

#: the seeded input families ``--inputs`` offers, by name
INPUT_FAMILIES = {
    "smooth": "a smooth random field over (time, row, col) plus noise: neighbouring tokens and frames alike",
    "independent": "independent standard-normal frames: no token resembles another",
    "shared_base": "one random base per video plus per-frame noise: a static scene",
}

TABLE_HEADER = (
    "| config | inputs | F × N × D | tokens out | retention | median ms | min ms | floor median ms | ratio "
    "| two products × floor | peak MB | input MB | naive temp GB |"
)
STAGE_HEADER = "| stage | median ms | min ms | share of stages | × floor | peak MB |"


# --------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class BenchInputs:
    features: torch.Tensor  # (F, N, D)
    shallow_scores: torch.Tensor  # (F, N), positive
    deep_scores: torch.Tensor  # (F, N), positive
    image_newline: torch.Tensor  # (D,)


def make_inputs(
    frames: int,
    dim: int,
    *,
    grid: tuple[int, int] = GRID,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    family: str = "smooth",
) -> BenchInputs:
    """A seeded synthetic video of one of :data:`INPUT_FAMILIES` (default ``smooth``: a smooth random
    field over (time, row, col) plus noise, so that neighbouring tokens and frames are similar as in a
    real video); scores uniform in (0, 1]. Generated in float32 on the CPU (identical for every device),
    then cast and moved."""
    if family not in INPUT_FAMILIES:
        raise ValueError(f"input family {family!r} is unknown; expected one of {sorted(INPUT_FAMILIES)}")
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    if family == "smooth":
        size = (max(frames // 4, 2), max(h // 6, 2), max(w // 6, 2))
        coarse = torch.randn(1, dim, *size, generator=g)  # (1, D, f, h', w')
        field = Fn.interpolate(coarse, size=(frames, h, w), mode="trilinear", align_corners=True)  # (1, D, F, H, W)
        features = field[0].permute(1, 2, 3, 0).contiguous().view(frames, h * w, dim)  # (F, N, D), row-major
        del field
        features.add_(torch.randn(frames, h * w, dim, generator=g), alpha=0.5)
    elif family == "independent":
        features = torch.randn(frames, h * w, dim, generator=g)
    else:  # shared_base
        features = torch.randn(frames, h * w, dim, generator=g).mul_(0.5).add_(torch.randn(1, h * w, dim, generator=g))
    shallow = 1.0 - torch.rand(frames, h * w, generator=g)  # (F, N) in (0, 1]
    deep = 1.0 - torch.rand(frames, h * w, generator=g)
    newline = torch.randn(dim, generator=g)  # (D,)
    move = partial(torch.Tensor.to, device=device, dtype=dtype)
    return BenchInputs(move(features), move(shallow), move(deep), move(newline))


def model_frames(config: MethodConfig) -> int:
    """Frames the paper ran the preset's model at: LLaVA-Video (average pooling) 64, OneVision 32."""
    return VIDEO_FRAMES if config.pool_mode is PoolMode.AVERAGE else OV_FRAMES


# --------------------------------------------------------------------------------------------------
# Measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], *, repeats: int, device: torch.device) -> list[float]:
    """Wall times (ms, ``time.perf_counter``) of ``repeats`` calls after one warm-up call."""
    return time_alternating([fn], repeats=repeats, device=device)[0]


def time_alternating(fns: list[Callable[[], object]], *, repeats: int, device: torch.device) -> list[list[float]]:
    """Wall times (ms) of ``repeats`` calls of each of ``fns`` after one warm-up call each, the calls
    alternating (a, b, a, b, ...) so that a load that changes during the run affects all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            out.append((time.perf_counter() - start) * 1e3)
    return times


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def _rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``: resident pages x page size)."""
    return int(_STATM.read_text().split()[1]) * _PAGE_SIZE


def _release_free_heap() -> None:
    """Drop garbage and hand freed heap pages back to the OS, so the RSS baseline holds no free
    memory that the measured call could reuse unseen (glibc ``malloc_trim``; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RssSampler(threading.Thread):
    """Background thread recording the highest RSS seen, sampling every ``interval`` seconds."""

    def __init__(self, interval: float = 1e-3) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


def peak_extra_bytes(fn: Callable[[], object], *, device: torch.device) -> int | None:
    """Peak memory a call needs beyond what was allocated before it. CUDA: ``max_memory_allocated``
    minus ``memory_allocated`` before the call. CPU: peak RSS (sampled every ~1 ms by a thread)
    minus RSS before the call; ``None`` where ``/proc/self/statm`` is missing."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    if not _STATM.exists():
        return None
    _release_free_heap()
    before = _rss_bytes()
    sampler = _RssSampler()
    sampler.start()
    out = fn()  # held until the sampler stops, so the output counts towards the peak
    peak = sampler.stop()
    del out
    return max(peak - before, 0)


def _summary(times: list[float]) -> dict[str, Any]:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times}


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / MB


# --------------------------------------------------------------------------------------------------
# Configs


def floor_anchors(config: MethodConfig, n: int) -> int:
    """K of the floor product: AOT's anchors, or a baseline's tokens per frame on the (F, N) grid."""
    if isinstance(config, AOTConfig):
        return config.num_anchors
    return min(max(round(config.retention * n), 1), n - 1)


def floor_call(features: torch.Tensor, num_anchors: int) -> Callable[[], torch.Tensor]:
    """The floor as a call: ``bmm`` of contiguous stand-ins for the pruned tokens (F, N - K, D) and
    the transposed anchors (F, D, K) -> (F, N - K, K). features: (F, N, D)."""
    pruned = features[:, num_anchors:].contiguous()  # (F, N - K, D)
    anchors_t = features[:, :num_anchors].contiguous().transpose(1, 2)  # (F, D, K)
    return partial(torch.bmm, pruned, anchors_t)


def products_call(
    features: torch.Tensor, num_anchors: int, kept: torch.Tensor, *, seed: int = 0
) -> Callable[[], object]:
    """The two products of AOT's intra-frame merge as a call, on seeded stand-in weights uniform in
    [0, 1): the dot products of every token with K stand-in anchors, (F, N, D) x (F, D, K) (one ``bmm``),
    then the kept pooled cells, ``kept[f]`` of frame f: the (F, N, kept) mixing matrix (an (F, N, K) x
    (F, K, kept) ``bmm``) applied to each frame, (kept, N) x (N, D) (one ``mm`` per frame).
    features: (F, N, D) on the GRID; kept: (F,) long."""
    x = features.contiguous()
    f_, n, _ = x.shape
    anchors_t = x[:, :num_anchors].contiguous().transpose(1, 2)  # (F, D, K)
    r = max(int(kept.max()), 1)
    counts = kept.tolist()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    change = torch.rand(f_, n, num_anchors, generator=gen, device=x.device).to(x.dtype)  # (F, N, K)
    at_anchors = torch.rand(f_, num_anchors, r, generator=gen, device=x.device).to(x.dtype)  # (F, K, kept)

    def call() -> list[torch.Tensor]:
        torch.bmm(x, anchors_t)  # (F, N, K)
        mix = torch.bmm(change, at_anchors)  # (F, N, kept)
        return [torch.mm(mix[f, :, :m].t(), x[f]) for f, m in enumerate(counts)]

    return call


def bench_config(
    name: str, *, frames: int | None, dim: int, repeats: int, seed: int, dtype: torch.dtype, device: torch.device,
    family: str = "smooth",
) -> dict[str, Any]:
    """Time and measure ``compress_video`` with preset ``name`` on inputs of ``family``, and its floor product."""
    cfg = get_preset(name)
    f_ = model_frames(cfg) if frames is None else frames
    n = GRID[0] * GRID[1]
    k = floor_anchors(cfg, n)
    inp = make_inputs(f_, dim, seed=seed, dtype=dtype, device=device, family=family)
    run = partial(
        compress_video, inp.features, inp.shallow_scores, inp.deep_scores, config=cfg, grid=GRID,
        image_newline=inp.image_newline,
    )
    result = run()
    assert not isinstance(result, list)
    floor_fn = floor_call(inp.features, k)
    calls = [run, floor_fn]
    kept = result.pooled_mask.sum(-1) if isinstance(cfg, AOTConfig) else None  # (F,) kept pooled cells
    if kept is not None:
        calls.append(products_call(inp.features, k, kept, seed=seed))
    # AOT, its floor (and the merge's two products) alternate, so ratios compare calls under the same load
    run_times, floor_times, *product_times = time_alternating(calls, repeats=repeats, device=device)
    summary, floor = _summary(run_times), _summary(floor_times)
    products = _summary(product_times[0]) if product_times else None
    peak = peak_extra_bytes(run, device=device)
    floor_peak = peak_extra_bytes(floor_fn, device=device)

    itemsize = inp.features.element_size()
    naive = f_ * (n - k) * k * dim * itemsize  # bytes of one (F, n_p, n_r, D) temporary
    return {
        "config": name,
        "inputs": family,
        "method": cfg.method,
        "frames": f_,
        "tokens_per_frame": n,
        "grid": list(GRID),
        "dim": dim,
        "num_anchors": k,
        "output_tokens": result.num_tokens,
        "retention": result.retention,
        "stage_tokens": result.stage_tokens,
        **summary,
        "floor": {
            "pruned_shape": [f_, n - k, dim],
            "anchor_shape": [f_, k, dim],
            "output_shape": [f_, n - k, k],
            **floor,
            "peak_extra_mb": _mb(floor_peak),
        },
        "ratio": summary["median_ms"] / floor["median_ms"],
        "products": None if products is None else {
            "cosine_shapes": [[f_, n, dim], [f_, dim, k]],
            # the kept cells formed from the frames: (F, kept, N) x (F, N, D), kept_cells_mean per frame
            "plan_shapes": [[f_, int(kept.max()), n], [f_, n, dim]],
            "kept_cells_mean": float(kept.float().mean()),
            **products,
        },
        "products_ratio": None if products is None else products["median_ms"] / floor["median_ms"],
        "peak_extra_mb": _mb(peak),
        "input_mb": inp.features.numel() * itemsize / MB,
        "naive_temp_gb": naive / GB,
        "naive_temp_over_peak": naive / peak if peak else None,
    }


def bench_stages(
    name: str, *, frames: int | None, dim: int, repeats: int, seed: int, dtype: torch.dtype, device: torch.device
) -> dict[str, Any]:
    """Time every stage of ``compress_video`` separately, each on the previous stage's output,
    with the arguments ``compress_video`` derives from the config."""
    cfg = get_preset(name)
    if not isinstance(cfg, AOTConfig):
        raise ValueError(f"preset {name!r} is method {cfg.method!r}; expected an AOT preset for the stage timings")
    f_ = model_frames(cfg) if frames is None else frames
    inp = make_inputs(f_, dim, seed=seed, dtype=dtype, device=device)
    x = inp.features  # (F, N, D)

    select = partial(
        select_anchors, inp.shallow_scores, inp.deep_scores, grid=GRID, num_anchors=cfg.num_anchors,
        global_ratio=cfg.global_ratio, window=min(cfg.window, *GRID), budget=cfg.anchor_budget,
    )
    mask = select()  # (F, N)
    intra = partial(
        merge_intra_frame, x, mask, grid=GRID, epsilon=cfg.intra_epsilon, position_weight=cfg.position_weight,
        ot_weight=cfg.ot_weight, scale=cfg.effective_intra_scale, max_iter=cfg.sinkhorn_max_iter,
        tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop, ot_mass=cfg.ot_mass,
    )
    mode, stride = cfg.pool_mode or PoolMode.BILINEAR, cfg.pool_stride or 2
    position = cfg.newline_position or NewlinePosition.ONE_TOKEN
    pool = partial(pool_frames, intra(), mask, grid=GRID, mode=mode, stride=stride)
    stages: list[tuple[str, Callable[[], object]]] = [
        ("select_anchors", select), ("merge_intra_frame", intra), ("pool_frames", pool),
    ]
    seq, seq_mask = pool()  # (F, n, D), (F, n)
    if position in (NewlinePosition.GRID, NewlinePosition.FRAME):
        newlines = partial(
            insert_newlines, seq, seq_mask, inp.image_newline,
            grid=pooled_grid(GRID, mode=mode, stride=stride), position=position,
        )
        stages.append(("insert_newlines", newlines))
        seq, seq_mask = newlines()  # (F, n', D), (F, n')
    if cfg.inter_frame:
        segments = (
            dynamic_segments(x, num_clips=cfg.num_clips, threshold=cfg.segment_threshold)
            if cfg.segmentation is Segmentation.DYNAMIC
            else None
        )
        inter = partial(
            merge_inter_frame, seq, seq_mask, keep_ratio=cfg.keep_ratio, num_clips=cfg.num_clips, segments=segments,
            scale=cfg.inter_scale_for(position), sigma=cfg.inter_sigma, epsilon=cfg.inter_epsilon,
            max_iter=cfg.sinkhorn_max_iter, tol=cfg.sinkhorn_tol, sinkhorn_stop=cfg.sinkhorn_stop,
            keyframe_emit=cfg.keyframe_emit,
        )
        stages.append(("merge_inter_frame", inter))

    floor = _summary(time_ms(floor_call(x, cfg.num_anchors), repeats=repeats, device=device))
    rows = [
        {"stage": stage, **_summary(time_ms(fn, repeats=repeats, device=device)),
         "peak_extra_mb": _mb(peak_extra_bytes(fn, device=device))}
        for stage, fn in stages
    ]
    total = sum(r["median_ms"] for r in rows)
    for r in rows:
        r["share"] = r["median_ms"] / total
        r["over_floor"] = r["median_ms"] / floor["median_ms"]
    return {"config": name, "frames": f_, "dim": dim, "stages": rows, "stage_sum_ms": total, "floor": floor}


# --------------------------------------------------------------------------------------------------
# Report


_PROC_STAT = Path("/proc/stat")


def _machine_busy_s() -> float | None:
    """CPU seconds all processes on the machine have spent busy (``/proc/stat``); ``None`` elsewhere."""
    if not _PROC_STAT.exists():
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in _PROC_STAT.read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class LoadMonitor:
    """CPU time other processes used while the benchmark ran: a noisy neighbour inflates timings."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.busy = _machine_busy_s()
        self.own = _own_cpu_s()

    def report(self) -> dict[str, float | None]:
        busy = _machine_busy_s()
        own = _own_cpu_s() - self.own
        other = None if busy is None or self.busy is None else max(busy - self.busy - own, 0.0)
        return {"wall_s": time.perf_counter() - self.wall, "own_cpu_s": own, "other_cpu_s": other}


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def results_table(results: list[dict[str, Any]]) -> str:
    lines = [TABLE_HEADER, _separator(TABLE_HEADER)]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['inputs']} | {r['frames']} × {r['tokens_per_frame']} × {r['dim']} "
            f"| {r['output_tokens']} "
            f"| {r['retention']:.3f} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | {r['floor']['median_ms']:.0f} "
            f"| {r['ratio']:.1f} | {_fmt(r['products_ratio'], '.2f')} | {_fmt(r['peak_extra_mb'], '.0f')} "
            f"| {r['input_mb']:.0f} | {r['naive_temp_gb']:.1f} |"
        )
    return "\n".join(lines)


def stages_table(report: dict[str, Any]) -> str:
    lines = [STAGE_HEADER, _separator(STAGE_HEADER)]
    for r in report["stages"]:
        lines.append(
            f"| {r['stage']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['share']:.0%} | {r['over_floor']:.2f} "
            f"| {_fmt(r['peak_extra_mb'], '.0f')} |"
        )
    floor = report["floor"]
    over = report["stage_sum_ms"] / floor["median_ms"]
    lines.append(f"| sum of stages | {report['stage_sum_ms']:.1f} | | 100% | {over:.2f} | |")
    lines.append(f"| floor (bmm) | {floor['median_ms']:.1f} | {floor['min_ms']:.1f} | | 1.00 | |")
    return "\n".join(lines)


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def describe(env: dict[str, Any], repeats: int) -> str:
    """One line naming the machine, as docs/benchmarks.md quotes it."""
    if env["device"] == "cpu":
        where = f"CPU: {env['cpu_count']} cores ({env['machine']}, {env['device_name']})"
    else:
        where = f"GPU: {env['device_name']}"
    return (
        f"{where}, torch {env['torch']}, {env['dtype']}, {env['torch_threads']} torch threads; "
        f"median and min of {repeats} run{'' if repeats == 1 else 's'} after 1 warm-up"
    )


# --------------------------------------------------------------------------------------------------
# CLI


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected an integer >= 1")
    return value


def bench_device(parser: argparse.ArgumentParser, choice: str) -> tuple[torch.device, torch.dtype]:
    """The device of ``--device`` (``auto``: cuda when available, else cpu) and its benchmark dtype
    (bfloat16 on CUDA, float32 on CPU); ``cuda`` without a CUDA device is a usage error."""
    if choice == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice)
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def write_report(path: Path, report: dict[str, Any], load: dict[str, float | None]) -> None:
    """Print the other processes' load of the run, write ``report`` as JSON to ``path``, say where."""
    if load["other_cpu_s"] is not None:
        print(f"other processes used {load['other_cpu_s']:.1f} CPU-s during this {load['wall_s']:.0f} s run")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available (bfloat16), else cpu (float32)")
    parser.add_argument("--frames", type=_positive_int, default=None,
                        help=f"frames for every preset (default: {OV_FRAMES} for OneVision, "
                             f"{VIDEO_FRAMES} for LLaVA-Video)")
    parser.add_argument("--dim", type=_positive_int, default=None,
                        help=f"feature width D (default {DIM}; {QUICK_DIM} with --quick)")
    parser.add_argument("--repeats", type=_positive_int, default=None,
                        help="timed runs after 1 warm-up (default 5; 1 with --quick)")
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated preset names")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument("--inputs", default="smooth",
                        help="comma-separated input families, each timed with every preset: "
                             + ", ".join(INPUT_FAMILIES))
    parser.add_argument("--stages", action="store_true", help="also time each stage of the first preset")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output JSON (default {DEFAULT_JSON})")
    parser.add_argument("--quick", action="store_true", help=f"small shapes for tests: D={QUICK_DIM}, 1 repeat")
    args = parser.parse_args(argv)

    device, dtype = bench_device(parser, args.device)
    dim = args.dim if args.dim is not None else (QUICK_DIM if args.quick else DIM)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not presets:
        parser.error("--presets is empty; expected at least one preset name")
    for name in presets:
        try:
            cfg = get_preset(name)
        except ValueError as err:
            parser.error(str(err))
        if isinstance(cfg, AOTConfig) and args.frames is not None and cfg.inter_frame and args.frames < cfg.num_clips:
            parser.error(f"--frames={args.frames} is fewer than the {cfg.num_clips} clips of preset {name!r}")
        if args.stages and name == presets[0] and not isinstance(cfg, AOTConfig):
            parser.error(f"--stages times AOT's stages; the first preset {name!r} is method {cfg.method!r}")

    families = [f.strip() for f in args.inputs.split(",") if f.strip()]
    unknown = [f for f in families if f not in INPUT_FAMILIES]
    if unknown or not families:
        parser.error(
            f"--inputs {args.inputs!r}: unknown input family {unknown}; expected some of {sorted(INPUT_FAMILIES)}"
        )

    env = environment(device, dtype)
    monitor = LoadMonitor()
    common = {
        "frames": args.frames, "dim": dim, "repeats": repeats, "seed": args.seed, "dtype": dtype, "device": device,
    }
    results = [bench_config(name, family=family, **common) for name in presets for family in families]
    stages = bench_stages(presets[0], **common) if args.stages else None
    env["load"] = monitor.report()

    print(describe(env, repeats))
    print()
    print(results_table(results))
    if stages is not None:
        print()
        print(f"Stages of {stages['config']} ({stages['frames']} × {GRID[0] * GRID[1]} × {stages['dim']}):")
        print()
        print(stages_table(stages))
    report = {
        "environment": env,
        "settings": {"repeats": repeats, "warmup": 1, "seed": args.seed, "dim": dim, "grid": list(GRID),
                     "frames": args.frames, "quick": args.quick, "presets": presets, "inputs": families},
        "results": results,
        "stages": stages,
    }
    print()
    write_report(args.json, report, env["load"])
    return report


if __name__ == "__main__":
    main()
