"""Benchmark of the SigLIP tower's attention-score capture (SPEC §0) against the plain tower.

Full so400m geometry as LLaVA keeps it (26 layers, 384 px, patch 14: N = 729 tokens per frame, 16 heads,
width 1152) with random weights (nothing is downloaded), a batch of ``--frames`` random frames, float32
on CPU and bfloat16 on CUDA. Measured, each as the median and min of ``--repeats`` timed calls (taken
round-robin across the variants) after one warm-up call, whose peak memory is recorded:

(i)   ``SigLipVisionTower.forward`` with SDPA: the tower without scores;
(ii)  ``SigLipVisionTower.forward_with_scores`` (default layers 5 and -2): SDPA everywhere except the
      two score layers, whose softmax runs in query chunks;
(iii) with ``--with-release``, the authors' release for reference: the eager tower returning every
      layer's attention maps (``output_attentions=True``, ``output_hidden_states=True``). Its maps alone
      take layers × frames × heads × N² elements; it runs only when that estimate is below 60 % of the
      available memory (RAM on CPU, free GPU memory on CUDA).

Before timing, one frame goes through every variant: the features of (i) and (ii) are compared, and
with (iii) the scores are compared with the column sums of the release's maps.

Commands::

    python -m benchmarks.tower                     # 8 frames on CPU (float32), 32 on CUDA (bf16), 3 repeats
    python -m benchmarks.tower --with-release      # also (iii), if its maps fit in memory
    python -m benchmarks.tower --device cpu --frames 4 --repeats 5
    python -m benchmarks.tower --quick --json /tmp/t.json   # tiny tower, 2 frames, 1 repeat (for tests)

Prints Markdown tables (pasted into docs/benchmarks.md) and writes every number plus the environment to
``--json`` (default ``runs/bench/tower.json``). Peak memory: CUDA ``max_memory_allocated`` minus what was
allocated before the call; CPU peak RSS (``/proc/self/statm`` sampled every ~1 ms) minus RSS before it,
with glibc told to serve every allocation of 1 MiB or more by its own mmap (``mallopt``), so that freed
tensors leave the RSS at once and it follows the live tensors rather than the heap's high-water mark.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.compression import LoadMonitor, bench_device, describe, environment, peak_extra_bytes, write_report
from llava.model.multimodal_encoder.siglip_encoder import SigLipVisionTower, so400m_vision_config

DEFAULT_JSON = Path("runs/bench/tower.json")
CPU_FRAMES = 8
CUDA_FRAMES = 32
QUICK_FRAMES = 2
QUICK_CONFIG = {  # 27 × 27 grid like so400m, tiny widths
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4,
    "image_size": 54, "patch_size": 2,
}
DEFAULT_SCORE_LAYERS = (5, -2)
OVERHEAD_GOAL_PCT = 15.0
RELEASE_MEMORY_FRACTION = 0.6
MB = 1e6
GB = 1e9
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter

TABLE_HEADER = "| variant | frames × N | median ms | min ms | time vs (i) | peak MB |"
MEMORY_HEADER = "| memory | MB |"
VARIANTS = {
    "forward": "(i) SDPA `forward`",
    "forward_with_scores": "(ii) `forward_with_scores`",
    "release": "(iii) release: eager, every layer's maps",
}


# --------------------------------------------------------------------------------------------------
# Calls


def release_call(tower: SigLipVisionTower, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The release's tower call: eager attention, every layer's maps and hidden states returned.
    pixel_values (B, 3, S, S) → the attention maps, one (B, heads, N, N) tensor per layer."""
    with _attention(tower, "eager"):
        return tower.vision_model(pixel_values, output_attentions=True, output_hidden_states=True).attentions


@contextmanager
def _attention(tower: SigLipVisionTower, implementation: str) -> Iterator[None]:
    """Switch this tower instance's attention implementation for the duration of the block."""
    previous = tower.config._attn_implementation
    tower.config._attn_implementation = implementation
    try:
        yield
    finally:
        tower.config._attn_implementation = previous


def mmap_large_allocations(threshold: int = 1 << 20) -> None:
    """Have glibc serve allocations of ``threshold`` bytes or more by their own mmap, which is unmapped on
    free (``mallopt(M_MMAP_THRESHOLD)``, which also stops glibc raising the threshold by itself); a no-op
    without glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError):
        pass


def available_bytes(device: torch.device) -> int:
    """Memory a call could still take: free GPU memory, or ``MemAvailable`` of ``/proc/meminfo``."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def check_one_frame(
    tower: SigLipVisionTower, pixel_values: torch.Tensor, score_layers: tuple[int, ...], *, with_release: bool
) -> dict[str, float | None]:
    """Warm every variant up on the first frame and compare them: max |Δ| of the features of (i) and
    (ii), and (with the release) of the scores against the column sums of the release's maps."""
    frame = pixel_values[:1]
    with torch.no_grad():
        plain = tower(frame)
        features, scores = tower.forward_with_scores(frame, score_layers=score_layers)
        feature_diff = (features.float() - plain.float()).abs().max().item()
        score_diff = None
        if with_release:
            maps = release_call(tower, frame)
            score_diff = max(
                (s - maps[layer].float().sum(dim=2).mean(dim=1)).abs().max().item()
                for s, layer in zip(scores, score_layers)
            )
    return {"features_max_abs_diff": feature_diff, "scores_max_abs_diff_vs_release": score_diff}


def measure(calls: dict[str, Callable[[], object]], *, repeats: int, device: torch.device) -> dict[str, dict[str, Any]]:
    """Per call: the peak memory of a first call (its warm-up), then the wall times (ms) of ``repeats``
    more. The timed calls go round-robin (i, ii, iii, i, ii, iii, …), so a load that drifts during the
    run weighs on every variant alike."""
    peaks = {name: peak_extra_bytes(fn, device=device) for name, fn in calls.items()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {
            "median_ms": statistics.median(times[name]), "min_ms": min(times[name]), "times_ms": times[name],
            "peak_extra_mb": None if peaks[name] is None else peaks[name] / MB,
        }
        for name in calls
    }


# --------------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def results_table(report: dict[str, Any]) -> str:
    """Timing and peak memory of each variant that ran."""
    s = report["settings"]
    base = report["results"]["forward"]["median_ms"]
    lines = [TABLE_HEADER, _separator(TABLE_HEADER)]
    for key, label in VARIANTS.items():
        r = report["results"].get(key)
        if r is None:
            continue
        if key == "forward_with_scores":
            label += f" (layers {', '.join(map(str, s['score_layers_resolved']))})"
        lines.append(
            f"| {label} | {s['frames']} × {s['tokens']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} "
            f"| {r['median_ms'] / base:.3f} | {_fmt(r['peak_extra_mb'], '.0f')} |"
        )
    return "\n".join(lines)


def memory_table(report: dict[str, Any]) -> str:
    """The extra memory of (ii) over (i) next to the sizes it should and should not scale with."""
    m = report["memory"]
    rows = [
        ("extra peak of (ii) over (i)", m["extra_peak_mb"]),
        ("score buffers: frames × heads × N × 4 B (per score layer)", m["score_buffer_mb"]),
        ("one chunk's float32 map: frames × heads × chunk × N × 4 B", m["chunk_map_mb"]),
        ("one layer's full maps: frames × heads × N² × itemsize", m["layer_maps_mb"]),
        ("release's maps: layers × frames × heads × N² × itemsize", m["release_maps_mb"]),
    ]
    lines = [MEMORY_HEADER, _separator(MEMORY_HEADER)]
    lines += [f"| {name} | {_fmt(value, ',.2f')} |" for name, value in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CLI


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected an integer >= 1")
    return value


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from err


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tower", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available (bfloat16), else cpu (float32)")
    parser.add_argument("--frames", type=_positive_int, default=None,
                        help=f"batch of frames (default {CPU_FRAMES} on CPU, {CUDA_FRAMES} on CUDA, "
                        f"{QUICK_FRAMES} with --quick)")
    parser.add_argument("--repeats", type=_positive_int, default=None,
                        help="timed calls after the warm-up / peak-memory call (default 3; 1 with --quick)")
    parser.add_argument("--score-layers", type=_layers, default=DEFAULT_SCORE_LAYERS,
                        help="comma-separated score layers of (ii) (default 5,-2)")
    parser.add_argument("--chunk-size", type=_positive_int, default=256,
                        help="query rows per softmax chunk (default 256)")
    parser.add_argument("--with-release", action="store_true",
                        help=f"also run (iii) when its maps take under {100 * RELEASE_MEMORY_FRACTION:.0f}%% of the "
                        "available memory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and frames")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output JSON (default {DEFAULT_JSON})")
    parser.add_argument("--quick", action="store_true", help="tiny tower (27 × 27 grid, width 64, 6 layers), 1 repeat")
    args = parser.parse_args(argv)

    device, dtype = bench_device(parser, args.device)
    frames = args.frames or (QUICK_FRAMES if args.quick else CUDA_FRAMES if device.type == "cuda" else CPU_FRAMES)
    repeats = args.repeats or (1 if args.quick else 3)

    if device.type == "cpu":
        mmap_large_allocations()
    torch.manual_seed(args.seed)
    config = so400m_vision_config(**QUICK_CONFIG) if args.quick else so400m_vision_config()
    tower = SigLipVisionTower(config, score_chunk_size=args.chunk_size).to(device=device, dtype=dtype)
    try:
        layers = tower.resolve_score_layers(args.score_layers)
    except ValueError as err:
        parser.error(str(err))
    pixel_values = (torch.rand(frames, 3, tower.image_size, tower.image_size) * 2 - 1).to(device=device, dtype=dtype)

    tokens, heads, n_layers = tower.num_patches, config.num_attention_heads, tower.num_layers
    itemsize = torch.finfo(dtype).bits // 8
    layer_maps = frames * heads * tokens**2 * itemsize
    release_maps = n_layers * layer_maps
    available = available_bytes(device)
    release_fits = release_maps < RELEASE_MEMORY_FRACTION * available
    print(f"(iii) release's maps: {n_layers} layers × {frames} frames × {heads} heads × {tokens}² × {itemsize} B "
          f"= {release_maps / GB:.2f} GB; available {available / GB:.1f} GB")
    run_release = args.with_release and release_fits
    if args.with_release and not release_fits:
        print(f"(iii) skipped: the estimate exceeds {RELEASE_MEMORY_FRACTION:.0%} of the available memory")

    env = environment(device, dtype)
    monitor = LoadMonitor()
    checks = check_one_frame(tower, pixel_values, layers, with_release=run_release)
    calls: dict[str, Callable[[], object]] = {
        "forward": torch.no_grad()(partial(tower, pixel_values)),
        "forward_with_scores": torch.no_grad()(partial(tower.forward_with_scores, pixel_values, score_layers=layers)),
    }
    if run_release:
        calls["release"] = torch.no_grad()(partial(release_call, tower, pixel_values))
    results = measure(calls, repeats=repeats, device=device)
    env["load"] = monitor.report()

    plain, scored = results["forward"], results["forward_with_scores"]
    overhead = 100.0 * (scored["median_ms"] / plain["median_ms"] - 1.0)
    overhead_min = 100.0 * (scored["min_ms"] / plain["min_ms"] - 1.0)
    extra = (None if plain["peak_extra_mb"] is None or scored["peak_extra_mb"] is None
             else scored["peak_extra_mb"] - plain["peak_extra_mb"])
    report = {
        "environment": env,
        "settings": {
            "frames": frames, "repeats": repeats, "warmup": 1, "seed": args.seed, "quick": args.quick,
            "tokens": tokens, "layers": n_layers, "heads": heads, "hidden_size": tower.hidden_size,
            "image_size": tower.image_size, "patch_size": tower.patch_size, "chunk_size": args.chunk_size,
            "score_layers": list(args.score_layers), "score_layers_resolved": list(layers),
            "with_release": args.with_release,
        },
        "results": results,
        "release": {"ran": run_release, "maps_estimate_gb": release_maps / GB, "available_gb": available / GB,
                    "fits": release_fits},
        "checks": checks,
        "overhead_pct": overhead,
        "overhead_min_pct": overhead_min,
        "overhead_goal_pct": OVERHEAD_GOAL_PCT,
        "overhead_goal_met": overhead <= OVERHEAD_GOAL_PCT,
        "memory": {
            "extra_peak_mb": extra,
            "score_buffer_mb": frames * heads * tokens * 4 / MB,
            "chunk_map_mb": frames * heads * min(args.chunk_size, tokens) * tokens * 4 / MB,
            "layer_maps_mb": layer_maps / MB,
            "release_maps_mb": release_maps / MB,
        },
    }

    print(describe(env, repeats))
    print()
    print(results_table(report))
    print()
    print(memory_table(report))
    print()
    print(f"overhead of (ii) over (i): {overhead:+.1f} % of the median (goal ≤ {OVERHEAD_GOAL_PCT:.0f} %: "
          f"{'met' if report['overhead_goal_met'] else 'NOT met'}), {overhead_min:+.1f} % of the min")
    print(f"one-frame checks: features max |Δ| {checks['features_max_abs_diff']:.2e}; scores vs release "
          f"{_fmt(checks['scores_max_abs_diff_vs_release'], '.2e')}")
    write_report(args.json, report, env["load"])
    return report


if __name__ == "__main__":
    main()
