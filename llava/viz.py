"""``aot viz``: which visual tokens a compression method keeps, merges and drops, frame by frame.

    aot viz --video clip.mp4 --method aot --retention 0.1            # runs/viz/aot.png (+ aot.json)
    aot viz --video clip.mp4 --method visionzip --retention 0.25 --out fig/visionzip_25.png
    aot viz --video clip.mp4 --compression paper_ov_10pct            # a preset, a YAML or a method@retention spec
    aot viz --all-methods --out runs/viz                             # one PNG per method, the smoke task's video
    aot viz --model lmms-lab/llava-onevision-qwen2-7b-ov --device cuda --frames 32 --video clip.mp4 --all-methods

The video goes once through the model's own visual path (vision tower, projector and the method, at
the seam where the model calls :func:`visionzip.compress_video`), so the masks drawn are those of the
tokens the LLM would receive. The PNG shows up to 16 frames (evenly spaced when there are more) with
the pooled-grid cells the method emits as tokens of their own (kept, orange), those folded into an
emitted token (merged, purple) and those dropped (dimmed), AOT's anchors on the vision grid (dots) when
the method has anchors, the per-frame counts in each title, and underneath a bar chart of kept /
merged / dropped cells for every frame. A JSON file next to the PNG holds the same counts.

The model is a checkpoint of a family in the original LLaVA-NeXT layout (:mod:`llava.families`).
Without ``--model``, the default family's tiny random-weight checkpoint is written to
``<out folder>/tiny-llava-ov`` if missing: its masks come from random attention, the drawing is real.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from llava.resources import tasks_dir
from llava.subcommand import run_subcommand

DEFAULT_VIDEO = tasks_dir() / "aot_smoke" / "scene_cut.mp4"
DEFAULT_RETENTION = 0.10
MAX_SHOWN = 16
KEPT_RGB = (1.0, 0.55, 0.0)  # orange
MERGED_RGB = (0.55, 0.2, 0.95)  # purple
DROPPED_RGB = (0.6, 0.6, 0.6)  # the bar of dropped cells
ANCHOR_RGB = (0.2, 1.0, 0.3)  # green dots
KEPT_ALPHA = 0.6
MERGED_ALPHA = 0.35
DROPPED_DIM = 0.3  # dropped cells keep this fraction of their brightness


# ------------------------------------------------------------------------------------------- masks


def token_masks(result: Any, pooled_grid: tuple[int, int],
                frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(kept, merged, anchors) as numpy bool arrays: kept and merged (F, h, w) over the pooled grid,
    anchors (F, N) or None. ``result`` is a :class:`visionzip.CompressionResult`, or None for full
    tokens (every cell kept)."""
    h, w = pooled_grid
    if result is None:
        return np.ones((frames, h, w), bool), np.zeros((frames, h, w), bool), None
    kept = getattr(result, "kept_grid", result.kept_mask)  # (F, n): newline positions left out
    merged = getattr(result, "merged_grid", result.merged_mask)
    kept_np = kept.bool().reshape(-1, h, w).cpu().numpy()  # (F, h, w)
    merged_np = np.zeros_like(kept_np) if merged is None else merged.bool().reshape(-1, h, w).cpu().numpy() & ~kept_np
    anchors = getattr(result, "anchor_mask", None)
    return kept_np, merged_np, None if anchors is None else anchors.bool().cpu().numpy()


def frame_counts(kept: np.ndarray, merged: np.ndarray, anchors: np.ndarray | None) -> list[dict[str, int]]:
    """Per frame: pooled cells kept, merged, dropped, and anchors (when the method has them)."""
    cells = kept.shape[1] * kept.shape[2]
    rows = []
    for i in range(kept.shape[0]):
        k, m = int(kept[i].sum()), int(merged[i].sum())
        row = {"frame": i, "kept": k, "merged": m, "dropped": cells - k - m}
        if anchors is not None:
            row["anchors"] = int(anchors[i].sum())
        rows.append(row)
    return rows


def overlay(frame: np.ndarray, kept: np.ndarray, merged: np.ndarray) -> np.ndarray:
    """The frame (H, W, 3) uint8 with each pooled cell ((h, w) masks) tinted: kept orange, merged
    purple, dropped dimmed. Cells map onto the whole frame, as the image processor resizes it."""
    height, width = frame.shape[:2]
    h, w = kept.shape
    rows = np.minimum(np.arange(height) * h // height, h - 1)
    cols = np.minimum(np.arange(width) * w // width, w - 1)
    k = kept[rows][:, cols][..., None]  # (H, W, 1)
    m = merged[rows][:, cols][..., None]
    img = frame.astype(np.float32) / 255.0
    kept_px = (1 - KEPT_ALPHA) * img + KEPT_ALPHA * np.asarray(KEPT_RGB, np.float32)
    merged_px = (1 - MERGED_ALPHA) * img + MERGED_ALPHA * np.asarray(MERGED_RGB, np.float32)
    out = np.where(k, kept_px, np.where(m, merged_px, DROPPED_DIM * img))
    return (out * 255).round().astype(np.uint8)


def shown_frames(frames: int, limit: int = MAX_SHOWN) -> list[int]:
    """Indices of the frames drawn: all of them, or ``limit`` evenly spaced."""
    if frames <= limit:
        return list(range(frames))
    return sorted({int(round(x)) for x in np.linspace(0, frames - 1, limit)})


# ------------------------------------------------------------------------------------------- drawing


def plot_masks(frames: np.ndarray, kept: np.ndarray, merged: np.ndarray, anchors: np.ndarray | None,
               path: str | Path, *, anchor_grid: tuple[int, int], title: str) -> Path:
    """The PNG: up to 16 frames with the overlay and anchors, and the per-frame count bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    counts = frame_counts(kept, merged, anchors)
    shown = shown_frames(len(frames))
    cols = min(len(shown), 8)
    rows = (len(shown) + cols - 1) // cols
    fig = plt.figure(figsize=(2.1 * cols + 0.4, 2.3 * rows + 2.4))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.1])
    ah, aw = anchor_grid
    for j, i in enumerate(shown):
        ax = fig.add_subplot(grid[j // cols, j % cols])
        ax.axis("off")
        height, width = frames[i].shape[:2]
        ax.imshow(overlay(frames[i], kept[i], merged[i]))
        c = counts[i]
        label = f"f{i}: {c['kept']} kept, {c['merged']} merged"
        if anchors is not None:
            ys, xs = np.nonzero(anchors[i].reshape(ah, aw))
            ax.scatter((xs + 0.5) * width / aw, (ys + 0.5) * height / ah, s=2, c=[ANCHOR_RGB], marker="s", linewidths=0)
            label += f"\n{c['anchors']} anchors"
        ax.set_title(label, fontsize=7)
    bars = fig.add_subplot(grid[rows, :])
    x = np.arange(len(counts))
    k = np.array([c["kept"] for c in counts])
    m = np.array([c["merged"] for c in counts])
    d = np.array([c["dropped"] for c in counts])
    bars.bar(x, k, color=KEPT_RGB, label="kept")
    bars.bar(x, m, bottom=k, color=MERGED_RGB, label="merged")
    bars.bar(x, d, bottom=k + m, color=DROPPED_RGB, label="dropped")
    bars.set_xlim(-0.6, len(counts) - 0.4)
    bars.set_ylim(0, 1.3 * kept.shape[1] * kept.shape[2])  # room for the legend above the bars
    bars.set_xlabel("frame")
    bars.set_ylabel("pooled cells")
    bars.legend(fontsize=7, loc="upper right", ncols=3)
    handles = [Patch(color=KEPT_RGB, label="kept (own token)"), Patch(color=MERGED_RGB, label="merged into a token"),
               Patch(color=(0.15, 0.15, 0.15), label="dropped")]
    if anchors is not None:
        handles.append(Patch(color=ANCHOR_RGB, label="anchor (vision grid)"))
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncols=len(handles))
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- running


def load_model(model: str, *, device: str, dtype: str | None):
    """(tokenizer, model, image processor) of a checkpoint in the original LLaVA-NeXT layout; ``ValueError``
    for a checkpoint of a family in another layout."""
    from llava.families import InferOptions, checkpoint_family
    from llava.families.llava_next import load_llava

    family = checkpoint_family(model)
    if family.layout != "llava_next":
        raise ValueError(f"--model {model!r} is a {family.title} checkpoint ({family.layout} layout); expected a "
                         "checkpoint of a family in the original LLaVA-NeXT layout")
    dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
    options = InferOptions(device=device, dtype=dtype, attn_implementation="sdpa")
    tokenizer, net, processor, _ = load_llava(model, options)
    net.eval()
    return tokenizer, net, processor


def visualise(net: Any, processor: Any, clip: Any, *, method: str, spec: str | None, path: str | Path,
              video: str = "") -> dict[str, Any]:
    """Run the model's visual path on ``clip`` with ``spec`` (None: full tokens), write the PNG at
    ``path`` and its counts next to it (``.json``); returns the counts."""
    import torch

    net.set_compression(spec)
    pixels = processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"].to(net.device, net.dtype)
    with torch.inference_mode():
        _, stats = net.encode_multimodal([pixels], ["video"])
    vs = stats[0]
    result = vs.result
    side = net.get_vision_tower().num_patches_per_side
    grid = getattr(result, "pooled_grid", None) or net.video_layout(vs.frames).pooled_grid
    kept, merged, anchors = token_masks(result, tuple(grid), vs.frames)
    label = "full tokens" if spec is None else spec
    title = (f"{method} ({label}): {vs.visual_tokens} of {vs.visual_tokens_plain} visual tokens, "
             f"retention {vs.retention:.3f}, {vs.frames} frames, pooled grid {grid[0]}x{grid[1]}")
    png = plot_masks(clip.frames, kept, merged, anchors, path, anchor_grid=(side, side), title=title)
    summary = {
        "method": method, "spec": spec or "full", "video": str(video), "frames": vs.frames,
        "pooled_grid": list(grid), "tokens": vs.visual_tokens, "tokens_plain": vs.visual_tokens_plain,
        "retention": vs.retention,
        "stage_tokens": dict(vs.stage_tokens), "shown_frames": shown_frames(vs.frames),
        "per_frame": frame_counts(kept, merged, anchors), "png": str(png),
    }
    png.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _spec(method: str, retention: float | None, compression: str | None) -> str | None:
    from llava.eval.sweep import FULL, compression_spec

    if compression is not None:
        return None if compression.lower() in ("none", FULL) else compression
    return compression_spec(method, DEFAULT_RETENTION if retention is None else retention)


# ------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--video", default=str(DEFAULT_VIDEO), help="video file (default: a clip of the smoke task)")
    parser.add_argument("--method", default="aot",
                        help="compression method (see --all-methods); full for no compression")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--retention", type=float, help=f"target retention in (0, 1] (default {DEFAULT_RETENTION:g})")
    which.add_argument("--compression",
                       help="a preset, a YAML path or a method@retention spec instead of --method/--retention")
    parser.add_argument("--all-methods", action="store_true", help="one PNG per method into the --out folder")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled from the video (up to 16 are drawn)")
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the tiny checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, bfloat16 otherwise)")
    parser.add_argument("--out", help="PNG path (default runs/viz/<method>.png); with --all-methods a folder "
                        "(default runs/viz)")
    return parser


def run(args: argparse.Namespace) -> int:
    from llava.eval.sweep import available_methods
    from llava.video import load_video

    if args.retention is not None and not 0 < args.retention <= 1:
        raise ValueError(f"--retention {args.retention}: expected a fraction in (0, 1]")
    if args.frames < 1:
        raise ValueError(f"--frames {args.frames}: expected at least 1")
    if args.all_methods and args.compression is not None:
        raise ValueError("--all-methods takes --retention, not --compression")
    if args.compression is None and args.method not in available_methods():
        raise ValueError(f"--method {args.method!r} is unknown; expected one of {available_methods()}")
    if args.all_methods:
        folder = Path(args.out or "runs/viz")
        jobs = [(m, _spec(m, args.retention, None), folder / f"{m}.png") for m in available_methods()]
    else:
        out = Path(args.out or f"runs/viz/{args.method}.png")
        if out.suffix.lower() != ".png":
            raise ValueError(f"--out {out}: expected a .png path (or use --all-methods for a folder)")
        folder = out.parent
        jobs = [(args.method, _spec(args.method, args.retention, args.compression), out)]
    clip = load_video(args.video, max_frames=args.frames)  # a missing or unreadable video fails before the model loads
    model = args.model
    if model is None:
        from llava.families import DEFAULT_FAMILY, get_family

        tiny = get_family(DEFAULT_FAMILY).tiny
        ckpt = folder / tiny.folder
        model = str(ckpt if (ckpt / "config.json").is_file() else tiny.writer(ckpt))
    _, net, processor = load_model(model, device=args.device, dtype=args.dtype)
    failed = []
    for method, spec, path in jobs:
        try:
            summary = visualise(net, processor, clip, method=method, spec=spec, path=path, video=args.video)
        except Exception as exc:  # noqa: BLE001 - with --all-methods one method failing does not stop the others
            if not args.all_methods:
                raise
            failed.append(method)
            print(f"{method}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        per_frame = ", ".join(f"{c['kept']}+{c['merged']}" for c in summary["per_frame"])
        print(f"{method} ({summary['spec']}): {summary['tokens']} tokens, retention {summary['retention']:.3f}; "
              f"kept+merged per frame: {per_frame}\n  wrote {summary['png']}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m llava.viz ...`` = ``aot viz ...``."""
    return run_subcommand("viz", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
