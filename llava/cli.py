"""``aot``: run a video LLM (LLaVA-NeXT, Qwen2.5-VL, Qwen3-VL) with and without AOT from the command line.

    aot infer --model lmms-lab/llava-onevision-qwen2-7b-ov --video clip.mp4 \\
        --question "What happens in the video?" --compression paper_ov_10pct
    aot infer --model ./ckpt --video clip.mp4 --question Q --compression none --json stats.json
    aot infer --model Qwen/Qwen2.5-VL-7B-Instruct --video clip.mp4 --question Q --compression aot@0.25 --max-pixels 200704
    aot demo --out runs/demo          # tiny model + synthetic video, on CPU, no download
    aot report runs/eval              # efficiency summary of lmms-eval runs (tokens, retention, FLOPs, ms, memory)
    aot sweep --out runs/sweep        # every method at 10/15/20/25 % on the smoke task (CPU) or a benchmark (GPUs)
    aot viz --all-methods             # a PNG per method: tokens kept / merged / dropped per frame
    aot paths tasks                   # the bundled lmms-eval tasks, for --include_path
    aot tiny-checkpoint runs/tiny     # the tiny random-weight checkpoint of the smoke evaluation

``infer`` prints the answer and a stats table: frames; visual tokens before and after each stage;
retention; prefill FLOPs (visual tokens, the paper's formula); vision, compression, prefill and
decode milliseconds; peak memory. ``demo`` runs the same with and without AOT on an embedded tiny
checkpoint and writes a PNG of which tokens became anchors and which survived the inter-frame stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import StoppingCriteriaList

import visionzip
from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.eval.efficiency import FirstTokenClock, peak_memory_mb, prefill_tflops
from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.subcommand import call
from llava.video import VideoClip, load_video


@dataclass
class InferStats:
    compression: str
    frames: int
    tokens_plain: int
    tokens: int
    stage_tokens: dict[str, int] = field(default_factory=dict)
    retention: float = 1.0
    prefill_tflops: float = 0.0
    vision_ms: float = 0.0
    compression_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    new_tokens: int = 0
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""


def answer_video(tokenizer, model, image_processor, video: str | VideoClip, question: str, *, max_frames: int = 32,
                 conv_template: str = "qwen_1_5", max_new_tokens: int = 16, compression_name: str = "none"):
    """One question about one video (a path or a decoded clip) through LLaVA-NeXT's public API.
    Returns (answer, InferStats)."""
    clip = video if isinstance(video, VideoClip) else load_video(video, max_frames=max_frames)
    pixels = image_processor.preprocess(clip.frames, return_tensors="pt")["pixel_values"]
    pixels = pixels.to(device=model.device, dtype=model.dtype)
    conv = get_conv_template(conv_template).copy()
    conv.append_message(conv.roles[0], f"{DEFAULT_IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    input_ids = input_ids.to(model.device)
    stop_words = [conv.sep if conv.sep_style.name != "TWO" else conv.sep2]
    clock = FirstTokenClock()
    criteria = StoppingCriteriaList([clock, KeywordsStoppingCriteria(stop_words, tokenizer, input_ids)])
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    start = time.perf_counter()
    out = model.generate(input_ids, images=[pixels], modalities=["video"], do_sample=False, max_new_tokens=max_new_tokens,
                         stopping_criteria=criteria, pad_token_id=tokenizer.pad_token_id)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    answer = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    vs = model.last_visual_stats[0]
    cfg = model.config
    first = clock.first or end
    peak, kind = peak_memory_mb(model.device)
    stats = InferStats(
        compression=compression_name, frames=vs.frames, tokens_plain=vs.tokens_plain, tokens=vs.tokens,
        stage_tokens=vs.stage_tokens, retention=vs.retention,
        prefill_tflops=prefill_tflops(vs.tokens, cfg),
        vision_ms=vs.vision_ms, compression_ms=vs.compression_ms,
        prefill_ms=(first - start) * 1000 - vs.vision_ms - vs.compression_ms, decode_ms=(end - first) * 1000,
        new_tokens=int(out.shape[1]), peak_memory_mb=peak, peak_memory_kind=kind,
    )
    return answer, stats


def format_stats(stats: InferStats) -> str:
    rows = [("compression", stats.compression), ("frames", stats.frames),
            ("visual tokens without compression", stats.tokens_plain)]
    labels = {"input": "  input (frames x tokens per frame)", "anchors": "  anchors after intra-frame OT",
              "pooled": "  cells kept (after the model's pooling, if any)", "newlines": "  newline tokens", "output": "  after inter-frame OT"}
    for stage, count in stats.stage_tokens.items():
        rows.append((labels.get(stage, f"  {stage}"), count))
    rows += [("visual tokens into the LLM", stats.tokens), ("retention (paper definition)", f"{stats.retention:.4f}"),
             ("prefill TFLOPs (visual tokens)", f"{stats.prefill_tflops:.6f}"), ("vision ms", f"{stats.vision_ms:.1f}"),
             ("compression ms", f"{stats.compression_ms:.1f}"), ("prefill ms", f"{stats.prefill_ms:.1f}"),
             ("decode ms", f"{stats.decode_ms:.1f} ({stats.new_tokens} tokens)"),
             (f"peak memory MB ({stats.peak_memory_kind})", f"{stats.peak_memory_mb:.0f}")]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _load(model: str, compression: str, device: str, dtype: str, attn: str | None):
    overwrite = {} if compression in ("none", "") else {"aot_compression": compression}
    device_map = "auto" if device == "auto" else {"": device}
    return load_pretrained_model(model, None, get_model_name_from_path(model), device_map=device_map,
                                 torch_dtype=dtype, attn_implementation=attn, overwrite_config=overwrite)


#: Hugging Face ``model_type`` -> the family ``aot infer`` runs it as
QWEN_FAMILIES = {"qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl", "qwen3_vl_moe": "qwen3_vl"}


def checkpoint_family(model: str) -> str:
    """``"qwen2_5_vl"`` / ``"qwen3_vl"`` for a Qwen2.5-VL / Qwen3-VL checkpoint in the Hugging Face layout
    (by the ``model_type`` of its ``config.json``), ``"llava"`` for anything else (the original LLaVA-NeXT layout)."""
    return QWEN_FAMILIES.get(str(checkpoint_model_type(model)), "llava")


def checkpoint_model_type(model: str) -> str | None:
    """The ``model_type`` of a checkpoint folder's ``config.json`` or a hub id's config (None when unreadable)."""
    config = Path(model) / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
    else:  # a hub id: its config, when it can be read
        try:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(model).model_type
        except Exception:  # noqa: BLE001 - LLaVA-NeXT's loader reports what it cannot find
            model_type = None
    return model_type


def answer_video_qwen(model_path: str, clip: VideoClip, question: str, *, family: str, compression: str, device: str,
                      dtype: str, attn: str | None, max_new_tokens: int, max_pixels: int | None = None):
    """One question about one decoded clip through transformers' own Qwen2.5-VL or Qwen3-VL, its processor
    and chat template, compressed by the family's seam (:mod:`llava.model.qwen_vl.qwen2_5_vl`, :mod:`llava.model.qwen_vl.qwen3_vl`).
    Qwen3-VL's timestamps come from the clip's frame indices and frame rate. Returns (answer, InferStats)."""
    import transformers
    from transformers import AutoProcessor

    if family == "qwen3_vl":
        from llava.model.qwen_vl.qwen3_vl import Qwen3VLCompression as seam_cls

        model_cls = (transformers.Qwen3VLMoeForConditionalGeneration if checkpoint_model_type(model_path) == "qwen3_vl_moe"
                     else transformers.Qwen3VLForConditionalGeneration)
        video_kwargs = {"video_metadata": [{"fps": clip.fps, "total_num_frames": clip.total_frames,
                                            "frames_indices": list(clip.indices)}], "do_sample_frames": False}
    else:
        from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression as seam_cls

        model_cls, video_kwargs = transformers.Qwen2_5_VLForConditionalGeneration, {}
    kwargs = {"torch_dtype": dtype, "device_map": "auto" if device == "auto" else {"": device}}
    if attn:
        kwargs["attn_implementation"] = attn
    model = model_cls.from_pretrained(model_path, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(model_path, **({"max_pixels": max_pixels} if max_pixels else {}))
    seam = seam_cls(model)
    seam.set_compression(None if compression in ("none", "") else compression)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[clip.frames], return_tensors="pt", **video_kwargs).to(model.device)
    clock = FirstTokenClock()
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    start = time.perf_counter()
    new = seam.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                        stopping_criteria=StoppingCriteriaList([clock]))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    answer = processor.batch_decode(new, skip_special_tokens=True)[0].strip()
    vs = seam.last_visual_stats[0]
    first = clock.first or end
    peak, kind = peak_memory_mb(model.device)
    vision_ms, compression_ms = vs.vision_ms or 0.0, vs.compression_ms or 0.0
    stats = InferStats(
        compression=compression, frames=vs.frames, tokens_plain=vs.tokens_plain, tokens=vs.tokens,
        stage_tokens=vs.stage_tokens, retention=vs.retention, prefill_tflops=prefill_tflops(vs.tokens, model.config),
        vision_ms=vision_ms, compression_ms=compression_ms,
        prefill_ms=(first - start) * 1000 - vision_ms - compression_ms, decode_ms=(end - first) * 1000,
        new_tokens=int(new.shape[1]), peak_memory_mb=peak, peak_memory_kind=kind,
    )
    return answer, stats


def cmd_infer(args: argparse.Namespace) -> int:
    visionzip.load_config(args.compression)  # unknown preset or bad video: errors before the model loads
    clip = load_video(args.video, max_frames=args.max_frames)
    family = checkpoint_family(args.model)
    if family != "llava":
        answer, stats = answer_video_qwen(
            args.model, clip, args.question, family=family, compression=args.compression, device=args.device,
            dtype=args.dtype, attn=args.attn_implementation, max_new_tokens=args.max_new_tokens, max_pixels=args.max_pixels,
        )
    else:
        tokenizer, model, processor, _ = _load(args.model, args.compression, args.device, args.dtype, args.attn_implementation)
        answer, stats = answer_video(tokenizer, model, processor, clip, args.question, max_frames=args.max_frames,
                                     conv_template=args.conv_template, max_new_tokens=args.max_new_tokens,
                                     compression_name=args.compression)
    print(f"answer: {answer}\n")
    print(format_stats(stats))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"answer": answer, **asdict(stats)}, indent=2))
    return 0


def plot_tokens(video: str, result: visionzip.CompressionResult, path: Path, *, max_frames: int, pooled_grid: tuple[int, int],
                anchor_grid: tuple[int, int], title: str) -> Path:
    """PNG: per frame, the frame with anchors (27x27 cells, cyan) and the pooled tokens emitted as
    they are by the inter-frame stage (keyframes and distinct tokens, orange), plus counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    frames = load_video(video, max_frames=max_frames).frames
    f_ = min(len(frames), 16)
    cols = min(f_, 8)
    rows = (f_ + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    ah, aw = anchor_grid
    ph, pw = pooled_grid
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        ax.axis("off")
        if i >= f_:
            continue
        img = frames[i]
        h, w = img.shape[:2]
        ax.imshow(img)
        anchors = result.anchor_mask[i].view(ah, aw).cpu().numpy()
        ys, xs = np.nonzero(anchors)
        ax.scatter((xs + 0.5) * w / aw, (ys + 0.5) * h / ah, s=3, c="cyan", marker="s", linewidths=0)
        kept = result.kept_mask[i][: ph * (result.kept_mask.shape[1] // ph)].view(ph, -1)[:, :pw].cpu().numpy()
        ys, xs = np.nonzero(kept)
        ax.scatter((xs + 0.5) * w / pw, (ys + 0.5) * h / ph, s=14, facecolors="none", edgecolors="orange", linewidths=0.8)
        ax.set_title(f"f{i}: {int(anchors.sum())} anchors, {int(kept.sum())} kept", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
    from llava.video import write_synthetic_video

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aot-demo-"))
    ckpt = write_tiny_checkpoint(work / "tiny-llava-ov")
    video = write_synthetic_video(out / "synthetic.mp4", frames=args.frames * 2, seed=0)
    print(f"tiny LLaVA-OneVision-style checkpoint: {ckpt}\nsynthetic video: {video}\n")
    question = "What is moving in the video?"
    tables = {}
    for compression in ("none", args.compression):
        tokenizer, model, processor, _ = _load(str(ckpt), compression, "cpu", "float32", "sdpa")
        answer, stats = answer_video(tokenizer, model, processor, str(video), question, max_frames=args.frames,
                                     max_new_tokens=8, compression_name=compression)
        tables[compression] = asdict(stats) | {"answer": answer}
        print(f"== compression: {compression}\nanswer (random tiny model): {answer!r}\n{format_stats(stats)}\n")
        if compression != "none":
            side = model.get_vision_tower().num_patches_per_side
            result = model.last_visual_stats[0].result
            png = plot_tokens(str(video), result, out / "aot_tokens.png", max_frames=args.frames,
                              pooled_grid=model.video_layout(args.frames).pooled_grid, anchor_grid=(side, side),
                              title=f"AOT {compression}: anchors (cyan) and tokens kept by the inter-frame stage (orange)")
            print(f"wrote {png}")
    (out / "demo_stats.json").write_text(json.dumps(tables, indent=2))
    print(f"wrote {out / 'demo_stats.json'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from llava.eval import efficiency

    if not Path(args.dir).is_dir():
        raise FileNotFoundError(f"{args.dir} is not a folder; expected an lmms-eval --output_path")
    summaries = efficiency.report(args.dir, rebuild=args.rebuild)
    if not summaries:
        raise FileNotFoundError(f"no lmms-eval results (*_results.json) under {args.dir}")
    for summary in summaries:
        print(f"{summary['path']}\n{efficiency.format_summary(summary)}\n")
    return 0


PATHS = ("tasks", "tables", "presets")


def cmd_paths(args: argparse.Namespace) -> int:
    from llava import resources

    found = {"tasks": resources.tasks_dir, "tables": resources.tables_dir, "presets": resources.presets_dir}
    if args.what:
        print(found[args.what]())
    else:
        for name in PATHS:
            print(f"{name}\t{found[name]()}")
    return 0


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    out = Path(args.dir)
    if (out / "config.json").is_file() and not args.force:
        print(f"{out} already holds a checkpoint (config.json); kept (--force rewrites it)")
        return 0
    print(write_tiny_checkpoint(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    infer = sub.add_parser("infer", help="answer a question about a video, with stats")
    infer.add_argument("--model", required=True, help="checkpoint folder or hub id: LLaVA-NeXT's original layout, or "
                       "Qwen2.5-VL / Qwen3-VL in the Hugging Face layout (Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct)")
    infer.add_argument("--video", required=True)
    infer.add_argument("--question", required=True)
    infer.add_argument("--compression", default="paper_ov_10pct", help=f"preset ({', '.join(visionzip.list_presets())}), YAML path or none")
    infer.add_argument("--max-frames", type=int, default=32)
    infer.add_argument("--conv-template", default="qwen_1_5", help="LLaVA-NeXT template (Qwen2.5-VL uses its own chat template)")
    infer.add_argument("--max-pixels", type=int, help="Qwen-VL: the processor's max_pixels (default: the checkpoint's)")
    infer.add_argument("--max-new-tokens", type=int, default=16)
    infer.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    infer.add_argument("--dtype", default="bfloat16", help="bfloat16, float16 or float32")
    infer.add_argument("--attn-implementation", default="sdpa")
    infer.add_argument("--json", help="also write the answer and stats here")
    infer.set_defaults(func=cmd_infer)
    demo = sub.add_parser("demo", help="tiny model + synthetic video on CPU: with and without AOT, plus a PNG")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--frames", type=int, default=32)
    demo.add_argument("--compression", default="paper_ov_10pct")
    demo.set_defaults(func=cmd_demo)
    report = sub.add_parser("report", help="efficiency summary of lmms-eval runs: writes <date>_aot_efficiency.json "
                            "next to each results file that lacks one and prints the tables")
    report.add_argument("dir", help="an lmms-eval --output_path (searched recursively)")
    report.add_argument("--rebuild", action="store_true", help="rewrite existing summaries too")
    report.set_defaults(func=cmd_report)
    paths = sub.add_parser("paths", help="where the bundled lmms-eval tasks, table configs and presets are "
                           "(e.g. --include_path \"$(aot paths tasks)\")")
    paths.add_argument("what", nargs="?", choices=PATHS, help="print only this folder")
    paths.set_defaults(func=cmd_paths)
    tiny = sub.add_parser("tiny-checkpoint", help="write the tiny random-weight LLaVA-OneVision checkpoint "
                          "(original on-disk layout) that the smoke evaluation runs")
    tiny.add_argument("dir", help="output folder")
    tiny.add_argument("--force", action="store_true", help="rewrite an existing checkpoint")
    tiny.set_defaults(func=cmd_tiny_checkpoint)
    from llava import viz
    from llava.eval import sweep

    sweep_parser = sub.add_parser("sweep", help="methods x retentions through lmms-eval: a table (Markdown, JSON) and a plot")
    sweep.add_arguments(sweep_parser)
    sweep_parser.set_defaults(func=sweep.run)
    viz_parser = sub.add_parser("viz", help="PNG of the tokens a method keeps and merges, frame by frame")
    viz.add_arguments(viz_parser)
    viz_parser.set_defaults(func=viz.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``aot``: a ValueError or FileNotFoundError is reported as ``aot <command>: error: ...``, exit status 2
    (:func:`llava.subcommand.call`, shared with ``python -m llava.eval.sweep`` and ``python -m llava.viz``)."""
    return call(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
