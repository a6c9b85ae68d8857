"""``aot``: run a video LLM of a registered family (:mod:`llava.families`) with and without AOT.

    aot infer --model lmms-lab/llava-onevision-qwen2-7b-ov --video clip.mp4 \\
        --question "What happens in the video?" --compression paper_ov_10pct
    aot infer --model ./ckpt --video clip.mp4 --question Q --compression none --json stats.json
    aot infer --model Qwen/Qwen2.5-VL-7B-Instruct --video clip.mp4 --question Q --compression aot@0.25 \\
        --max-pixels 200704
    aot infer --model lmms-lab/LLaVA-Video-7B-Qwen2 --family llava_video --video clip.mp4 --question Q
    aot demo --out runs/demo          # tiny model + synthetic video, on CPU, no download
    aot demo --serve --port 7860      # a local web page: one video, two compressions side by side
    aot report runs/eval              # efficiency summary of lmms-eval runs (tokens, retention, FLOPs, ms, memory)
    aot sweep --out runs/sweep        # every method at 10/15/20/25 % on the smoke task (CPU) or a benchmark
    aot viz --all-methods             # a PNG per method: tokens kept / merged / dropped per frame
    aot paths tasks                   # the bundled lmms-eval tasks, for --include_path
    aot tiny-checkpoint runs/tiny     # the tiny random-weight checkpoint of the smoke evaluation

``infer`` runs the checkpoint as the family of its ``model_type`` (or ``--family``) and prints the answer
and a stats table: frames read (distinct) and sampled (repeats included, for a video shorter than
``--max-frames``); visual tokens before and after each stage; retention; prefill FLOPs (visual
tokens, the paper's formula); vision, compression, prefill and decode milliseconds; peak memory.
``--compression none`` runs full tokens even on a checkpoint whose config.json saved a compression; without
``--compression`` the checkpoint's own ``aot_compression`` runs, else ``paper_ov_10pct``; the first line
printed says which one ran and where it came from.
``demo`` runs the same with and without AOT on the tiny LLaVA-NeXT checkpoint and writes the PNG of
``aot viz`` (tokens kept, merged and dropped per frame, AOT's anchors) for the compressed run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import visionzip
from llava.families import DEFAULT_FAMILY, InferOptions, checkpoint_family, format_stats, get_family, list_families
from llava.subcommand import call
from llava.video import load_video

#: ``aot infer``'s compression when neither ``--compression`` nor the checkpoint's config.json gives one
DEFAULT_INFER_COMPRESSION = "paper_ov_10pct"


def infer_compression(model: str, flag: str | None) -> tuple[Any, str, str]:
    """What ``aot infer`` runs: (compression for :class:`InferOptions`, its name in the record, where it
    came from). ``--compression`` wins over the checkpoint (``none``: full tokens, whatever config.json
    says); without it, the ``aot_compression`` a checkpoint folder's config.json carries (training saves
    it), else :data:`DEFAULT_INFER_COMPRESSION`. The setting is checked here, before any weight loads."""
    if flag is not None:
        if flag.strip() == "":
            raise ValueError("--compression '': expected a preset, a YAML path, <method>@<retention> or none")
        return flag, flag if visionzip.load_config(flag) is not None else "none", "--compression"
    config = Path(model) / "config.json"
    saved = json.loads(config.read_text()).get("aot_compression") if config.is_file() else None
    if saved is None:
        visionzip.load_config(DEFAULT_INFER_COMPRESSION)
        return DEFAULT_INFER_COMPRESSION, DEFAULT_INFER_COMPRESSION, "the default (no --compression)"
    where = f"aot_compression of {config}"
    if isinstance(saved, dict):
        data = dict(saved)
        method = data.pop("method", "aot")
        cfg = visionzip.config_class(method).from_dict(data, source=where)
        return cfg, f"{method} (checkpoint config)", where
    visionzip.load_config(saved)
    return saved, str(saved), where


def cmd_infer(args: argparse.Namespace) -> int:
    # an unknown preset or family, a mismatched --family or a bad video: errors before the model loads
    compression, name, source = infer_compression(args.model, args.compression)
    family = checkpoint_family(args.model, args.family)
    clip = load_video(args.video, max_frames=args.max_frames)
    options = InferOptions(compression=compression, compression_name=name, device=args.device, dtype=args.dtype,
                           attn_implementation=args.attn_implementation, max_new_tokens=args.max_new_tokens,
                           max_frames=args.max_frames, conv_template=args.conv_template, max_pixels=args.max_pixels)
    print(f"compression: {name} (from {source})", flush=True)
    answer, stats = family.answer(args.model, clip, args.question, options)
    print(f"answer: {answer}\n")
    print(format_stats(stats))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"answer": answer, "family": family.name, **stats.to_dict()}, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.serve:
        from llava import demo_app

        # gradio missing, a missing model or a bad option: an error before anything is served
        demo_app.require_gradio()
        model = demo_app.open_model(args.model, device=args.device, max_frames=args.frames)
        demo_app.serve(model, host=args.host, port=args.port)
        return 0
    for flag, value in (("--model", args.model), ("--device", args.device)):
        if value is not None:
            raise ValueError(f"{flag} is an option of aot demo --serve; expected --serve with it")
    from llava import viz
    from llava.families.llava_next import answer_loaded, load_llava
    from llava.video import write_synthetic_video

    family = get_family(DEFAULT_FAMILY)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aot-demo-"))
    ckpt = family.tiny.writer(work / family.tiny.folder)
    video = write_synthetic_video(out / "synthetic.mp4", frames=args.frames * 2, seed=0)
    clip = load_video(video, max_frames=args.frames)
    print(f"tiny {family.title}-style checkpoint: {ckpt}\nsynthetic video: {video}\n")
    question = "What is moving in the video?"
    tables = {}
    for compression in ("none", args.compression):
        options = InferOptions(compression=compression, device="cpu", dtype="float32")
        tokenizer, model, processor, _ = load_llava(str(ckpt), options)
        answer, stats = answer_loaded(tokenizer, model, processor, clip, question, max_new_tokens=8,
                                      compression=compression)
        tables[compression] = stats.to_dict() | {"answer": answer}
        print(f"== compression: {compression}\nanswer (random tiny model): {answer!r}\n{format_stats(stats)}\n")
        if compression != "none":
            summary = viz.visualise(model, processor, clip, method=compression, spec=compression,
                                    path=out / "aot_tokens.png", video=str(video))
            print(f"wrote {summary['png']}")
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
    family = get_family(args.family)
    out = Path(args.dir)
    if (out / "config.json").is_file() and not args.force:
        print(f"{out} already holds a checkpoint (config.json); kept (--force rewrites it)")
        return 0
    print(family.tiny.writer(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    families = ", ".join(list_families())
    default = InferOptions
    infer = sub.add_parser("infer", help="answer a question about a video, with stats")
    infer.add_argument("--model", required=True, help="checkpoint folder or hub id of a registered family, picked "
                       "by its config.json model_type (lmms-lab/llava-onevision-qwen2-7b-ov, "
                       "Qwen/Qwen2.5-VL-7B-Instruct)")
    infer.add_argument("--family", help=f"run the checkpoint as this family ({families}); default: the family of its "
                       f"model_type (a LLaVA-NeXT original-layout checkpoint: {DEFAULT_FAMILY})")
    infer.add_argument("--video", required=True)
    infer.add_argument("--question", required=True)
    infer.add_argument("--compression",
                       help=f"preset ({', '.join(visionzip.list_presets())}), YAML path, <method>@<retention> or "
                       "none (full tokens, whatever the checkpoint's config.json says); default: the checkpoint's "
                       f"own aot_compression when its config.json has one, else {DEFAULT_INFER_COMPRESSION}")
    infer.add_argument("--max-frames", type=int, default=default.max_frames)
    infer.add_argument("--conv-template", default=default.conv_template,
                       help="LLaVA-NeXT template (the Qwen-VL families use their own chat template)")
    infer.add_argument("--max-pixels", type=int, help="Qwen-VL: the processor's max_pixels (default: the checkpoint's)")
    infer.add_argument("--max-new-tokens", type=int, default=default.max_new_tokens)
    infer.add_argument("--device", default=default.device, help="auto, cpu, cuda, cuda:1, ...")
    infer.add_argument("--dtype", default=default.dtype, help="bfloat16, float16 or float32")
    infer.add_argument("--attn-implementation", default=default.attn_implementation)
    infer.add_argument("--json", help="also write the answer, the family and the stats here")
    infer.set_defaults(func=cmd_infer)
    demo = sub.add_parser("demo", help="tiny model + synthetic video on CPU: with and without AOT, plus a PNG; "
                          "--serve: a local web page comparing two compressions")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--frames", type=int, default=32, help="frames sampled per video (with --serve too)")
    demo.add_argument("--compression", default="paper_ov_10pct")
    demo.add_argument("--serve", action="store_true", help="serve the page (llava/demo_app.py) until interrupted")
    demo.add_argument("--model", help="with --serve: checkpoint folder or hub id of a registered family "
                      "(default: the tiny checkpoint, on CPU)")
    from llava import demo_app

    demo.add_argument("--host", default=demo_app.DEFAULT_HOST, help="with --serve: the address to listen on")
    demo.add_argument("--port", type=int, default=demo_app.DEFAULT_PORT, help="with --serve: the port to listen on")
    demo.add_argument("--device", help="with --serve: cpu, cuda, cuda:1, ... (default: cpu for the tiny checkpoint; "
                      "for a --model, cuda where there is a GPU, else cpu)")
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
    tiny = sub.add_parser("tiny-checkpoint", help="write a family's tiny random-weight checkpoint (by default the "
                          f"{DEFAULT_FAMILY} one, original on-disk layout, that the smoke evaluation runs)")
    tiny.add_argument("dir", help="output folder")
    tiny.add_argument("--family", default=DEFAULT_FAMILY, help=f"whose tiny checkpoint ({families})")
    tiny.add_argument("--force", action="store_true", help="rewrite an existing checkpoint")
    tiny.set_defaults(func=cmd_tiny_checkpoint)
    from llava import viz
    from llava.eval import sweep

    sweep_parser = sub.add_parser("sweep", help="methods x retentions through lmms-eval: a table (Markdown, JSON) "
                                  "and a plot")
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
