"""``aot demo --serve``: a local web page (Gradio) that answers one question about one video with two
compressions side by side and shows what each keeps.

    aot demo --serve                                   # the tiny random-weight checkpoint, on CPU, no download
    aot demo --serve --model lmms-lab/llava-onevision-qwen2-7b-ov --port 7861     # on the GPU where there is one
    aot demo --serve --model Qwen/Qwen2.5-VL-7B-Instruct --host 0.0.0.0

The page takes a bundled clip of the smoke task (``aot paths tasks``/aot_smoke/*.mp4) or an uploaded
video, a question and two compressions (``none``, a preset, a YAML path or ``<method>@<retention>`` of
any registered method). One click runs both through the code ``aot infer`` runs
(:mod:`llava.families`: the family's runner, the model loaded once and its compression set per run), and
shows per setting the answer, visual tokens before -> after, retention, time to first token and the
per-stage milliseconds, and the frames with the kept tokens drawn over them (:func:`llava.viz.plot_masks`,
the drawing of ``aot viz``).

The same action is the API endpoint ``/compare`` (``gradio_client.Client(url).predict(video, question,
compression_a, compression_b, api_name="/compare")``): its last output is ``{"a": entry, "b": entry}``,
each entry what ``aot infer --json`` writes (``answer``, ``family`` and the stats record: ``visual_tokens``,
``visual_tokens_plain``, ``retention``, ``ttft_ms``, ...). A file that is not a video, an unknown
compression or a model that cannot be loaded is reported as an error of that request (a message in the
page; ``gradio_client`` raises it); the app keeps serving.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import visionzip
from llava.families import DEFAULT_FAMILY, FamilySpec, InferOptions, checkpoint_family, get_family
from llava.families.infer import checkpoint_model_type
from llava.resources import tasks_dir

API_NAME = "compare"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: the two compressions the page starts with
DEFAULT_COMPRESSIONS = ("none", "paper_ov_10pct")
#: the retention of the ``<method>@<retention>`` choices listed for every registered method
LISTED_RETENTION = 0.25
DEFAULT_QUESTION = "What is moving in the video?"
#: the clip the page starts with
DEFAULT_CLIP = "red_right.mp4"
#: system fonts only: the page loads nothing from outside the machine
FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS = ("ui-monospace", "monospace")


def temporary_folder(prefix: str) -> Path:
    """A new temporary folder, removed when the process exits normally (Ctrl-C included)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def require_gradio() -> None:
    """``ValueError`` saying how to install gradio when it is missing (it comes with the ``demo`` extra)."""
    from importlib.util import find_spec

    if find_spec("gradio") is None:
        raise ValueError("aot demo --serve needs gradio, which is not installed; expected it from the demo extra: "
                         "pip install 'aot-video[demo]' (bash scripts/setup.sh installs it)")


def bundled_clips() -> list[Path]:
    """The smoke task's videos (``aot paths tasks``/aot_smoke/*.mp4), sorted by name."""
    clips = sorted((tasks_dir() / "aot_smoke").glob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no *.mp4 under {tasks_dir() / 'aot_smoke'}; expected the smoke task's videos")
    return clips


def compression_choices() -> list[str]:
    """What the compression menus list: ``none``, every preset, and ``<method>@0.25`` for every registered
    method (a YAML path or another ``<method>@<retention>`` can be typed in)."""
    methods = [f"{m}@{LISTED_RETENTION:g}" for m in visionzip.list_methods() if m != "full"]
    return ["none", *visionzip.list_presets(), *methods]


def resolve_compression(text: Any) -> tuple[str, str]:
    """(what :class:`InferOptions` runs, its name in the record) for a compression as typed, the way
    ``aot infer --compression`` reads it; ``ValueError`` naming it when it is empty or unknown."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"compression {text!r}: expected a preset, a YAML path, <method>@<retention> or none")
    spec = text.strip()
    return spec, spec if visionzip.load_config(spec) is not None else "none"


# ------------------------------------------------------------------------------------------- the model


@dataclass
class DemoModel:
    """The checkpoint the app serves and how it runs: ``path`` (a folder or hub id) as ``family``.

    ``run`` answers through the family's ``aot infer`` runner in its two halves: the checkpoint is loaded
    once (``FamilySpec.load``) and each run answers under its compression (``FamilySpec.answer_loaded``), as
    ``aot infer`` would; a family without them loads the checkpoint per run (``FamilySpec.answer``).
    ``tiny``: the checkpoint is the tiny random-weight one (the page says its answers are noise). One run
    at a time."""

    path: str
    family: FamilySpec
    device: str = "cpu"
    dtype: str = "float32"
    max_frames: int = 32
    max_new_tokens: int = 16
    tiny: bool = False
    _loaded: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def temporal_patch(self) -> int:
        """Sampled frames per temporal token: the vision config's ``temporal_patch_size`` (Qwen-VL), else 1."""
        if self.family.layout == "llava_next":
            return 1
        from transformers import AutoConfig

        vision = getattr(AutoConfig.from_pretrained(self.path), "vision_config", None)
        return int(getattr(vision, "temporal_patch_size", 1) or 1)

    def options(self, compression: str, name: str) -> InferOptions:
        return InferOptions(compression=compression, compression_name=name, device=self.device, dtype=self.dtype,
                            max_new_tokens=self.max_new_tokens, max_frames=self.max_frames)

    def load(self) -> None:
        """Load the checkpoint now, when its family can hold it (``FamilySpec.load``; ``aot demo --serve``
        does it before serving, so a checkpoint that does not load stops it)."""
        if self.family.load is not None and self._loaded is None:
            self._loaded = self.family.load(self.path, self.options("none", "none"))

    def run(self, clip: Any, question: str, compression: str) -> tuple[str, Any, Any]:
        """(answer, :class:`~llava.model.record.SampleRecord`, the loaded LLaVA-NeXT network or None)."""
        spec, name = resolve_compression(compression)
        options = self.options(spec, name)
        with self._lock:
            if self.family.load is None:  # a family that cannot hold its model loads it per request
                answer, record = self.family.answer(self.path, clip, question, options)
                return answer, record, None
            self.load()
            answer, record = self.family.answer_loaded(self._loaded, clip, question, options)
            net = self._loaded.model if self.family.layout == "llava_next" else None
            return answer, record, net


def default_device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_model(model: str | None, *, device: str | None = None, max_frames: int = 32,
               work: Path | None = None) -> DemoModel:
    """The model to serve. None: the default family's tiny random-weight checkpoint, written under
    ``work`` (a new temporary folder by default, removed at exit), on CPU in float32. Otherwise the checkpoint folder or
    hub id, as the family its ``model_type`` names, on ``device`` (default: the GPU where there is one),
    in bfloat16 on a GPU and float32 on CPU. ``FileNotFoundError`` when ``model`` is neither a folder
    with a config.json nor a readable hub id."""
    if max_frames < 1:
        raise ValueError(f"--frames {max_frames}: expected at least 1")
    if model is None:
        family = get_family(DEFAULT_FAMILY)
        folder = Path(work or temporary_folder("aot-demo-serve-")) / family.tiny.folder
        ckpt = folder if (folder / "config.json").is_file() else family.tiny.writer(folder)
        return DemoModel(str(ckpt), family, device=device or "cpu", dtype="float32", max_frames=max_frames,
                         tiny=True)
    if Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model}: the folder has no config.json; expected a checkpoint folder")
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") != 1
    if not Path(model).is_dir() and looks_like_path:
        raise FileNotFoundError(f"--model {model}: no such checkpoint folder; expected a checkpoint folder or a hub "
                                "id (<org>/<name>)")
    if not Path(model).is_dir() and checkpoint_model_type(model) is None:
        raise FileNotFoundError(f"--model {model}: no such checkpoint folder, and no hub model of that id could be "
                                "read; expected a checkpoint folder or a hub id")
    device = device or default_device()
    return DemoModel(model, checkpoint_family(model), device=device,
                     dtype="float32" if device == "cpu" else "bfloat16", max_frames=max_frames)


# ------------------------------------------------------------------------------------------- one setting


def _grid_for(tokens_per_frame: int, aspect: float) -> tuple[int, int]:
    """The (h, w) with h * w = ``tokens_per_frame`` whose w / h is closest to the frame's ``aspect``."""
    n = max(int(tokens_per_frame), 1)
    pairs = [(h, n // h) for h in range(1, n + 1) if n % h == 0]
    return min(pairs, key=lambda hw: abs(math.log(hw[1] / hw[0]) - math.log(aspect)))


def draw_tokens(clip: Any, record: Any, net: Any, path: Path, *, label: str, temporal_patch: int = 1) -> Path:
    """The PNG of :func:`llava.viz.plot_masks` for one run: the frames the model encoded (one per
    temporal token where frames are merged in time), with the cells it kept, merged and dropped and
    AOT's anchors, from the run's own compression result (full tokens: every cell kept).
    ``temporal_patch``: the sampled frames per temporal token (Qwen-VL's ``temporal_patch_size``)."""
    from llava import viz

    result = record.result
    frames = np.asarray(clip.frames)
    grid = getattr(result, "pooled_grid", None) if result is not None else None
    if result is not None:
        count = int(result.pooled_mask.shape[0])
    elif net is not None:
        count = int(record.frames_sampled)
    else:  # full tokens of a Qwen-VL model: one grid per temporal token of temporal_patch_size frames
        count = max(1, int(record.frames_sampled) // temporal_patch)
    if grid is None and net is not None:
        grid = net.video_layout(count).pooled_grid
    if grid is None:
        newlines = int(record.stage_tokens.get("newlines", 0))
        grid = _grid_for((record.visual_tokens_plain - newlines) // count, frames.shape[2] / frames.shape[1])
    grid = tuple(int(g) for g in grid)
    kept, merged, anchors = viz.token_masks(result, grid, count)
    shown = frames if len(frames) == count else frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]
    if anchors is not None:
        side = net.get_vision_tower().num_patches_per_side if net is not None else None
        anchor_grid = (side, side) if side else (grid if grid[0] * grid[1] == anchors.shape[1]
                                                 else (math.isqrt(anchors.shape[1]),) * 2)
    else:
        anchor_grid = grid
    title = (f"{label}: {record.visual_tokens} of {record.visual_tokens_plain} visual tokens, retention "
             f"{record.retention:.3f}, {count} frames, grid {grid[0]}x{grid[1]}")
    return viz.plot_masks(shown, kept, merged, anchors, path, anchor_grid=anchor_grid, title=title)


def stats_markdown(entry: dict[str, Any]) -> str:
    """One setting's figures as a Markdown table."""
    stages = ", ".join(f"{k} {v}" for k, v in entry["stage_tokens"].items())
    rows = [
        ("compression", f"`{entry['compression']}`"),
        ("visual tokens", f"{entry['visual_tokens_plain']} → {entry['visual_tokens']}"),
        ("retention", f"{entry['retention']:.4f}"),
        ("TTFT ms", f"{entry['ttft_ms']:.1f}"),
        ("vision ms", f"{entry['vision_ms']:.1f}"),
        ("compression ms", f"{entry['compression_ms']:.1f}"),
        ("prefill ms", f"{entry['prefill_ms']:.1f}"),
        ("decode ms", f"{entry['decode_ms']:.1f} ({entry['output_tokens']} tokens)"),
        ("frames read / sampled", f"{entry['frames']} / {entry['frames_sampled']}"),
        ("tokens per stage", stages or "-"),
    ]
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def run_setting(model: DemoModel, clip: Any, question: str, compression: str, out: Path) -> tuple[dict, Path]:
    """One compression: (the entry ``aot infer --json`` writes, the PNG of the tokens kept)."""
    answer, record, net = model.run(clip, question, compression)
    entry = {"answer": answer, "family": model.family.name, **record.to_dict()}
    png = draw_tokens(clip, record, net, out, label=entry["compression"], temporal_patch=model.temporal_patch)
    return entry, png


def compare(model: DemoModel, video: Any, question: Any, compression_a: Any, compression_b: Any, *,
            out_dir: Path, progress: Any = None) -> tuple[dict, Path, dict, Path]:
    """The page's action and the ``/compare`` endpoint: both settings on one video. Every input is checked
    before the model runs (``ValueError`` / ``FileNotFoundError`` naming it)."""
    from llava.video import load_video

    if video is None or (isinstance(video, str) and not video.strip()):
        raise ValueError("no video: pick a bundled clip or upload a video file")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty: type a question about the video")
    resolve_compression(compression_a)
    resolve_compression(compression_b)
    name = Path(str(video)).name
    try:
        clip = load_video(str(video), max_frames=model.max_frames)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{name} is not a video this app can read; expected a video file such as .mp4 "
                         f"({exc})") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (key, compression) in enumerate((("a", compression_a), ("b", compression_b))):
        if progress is not None:
            progress((i, 2), desc=f"running {compression.strip()} ({key.upper()})")
        results.append(run_setting(model, clip, question, compression, out_dir / f"{key}_tokens.png"))
    (entry_a, png_a), (entry_b, png_b) = results
    return entry_a, png_a, entry_b, png_b


# ------------------------------------------------------------------------------------------- the page


def build_app(model: DemoModel) -> Any:
    """The Gradio Blocks of the page (``aot demo --serve`` launches it)."""
    import gradio as gr

    clips = {p.name: str(p) for p in bundled_clips()}
    start_clip = DEFAULT_CLIP if DEFAULT_CLIP in clips else next(iter(clips))
    choices = compression_choices()
    work = temporary_folder("aot-demo-runs-")
    counter = iter(range(1 << 62))

    def on_compare(video, question, compression_a, compression_b, progress=gr.Progress()):  # noqa: B008 - gradio's API
        out_dir = work / f"run{next(counter)}"
        try:
            entry_a, png_a, entry_b, png_b = compare(model, video, question, compression_a, compression_b,
                                                     out_dir=out_dir, progress=progress)
        except Exception as exc:  # noqa: BLE001 - every failure of a request is shown to its user; the app serves on
            raise gr.Error(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError | FileNotFoundError)
                           else str(exc), duration=None) from exc
        return (entry_a["answer"], stats_markdown(entry_a), str(png_a),
                entry_b["answer"], stats_markdown(entry_b), str(png_b), {"a": entry_a, "b": entry_b})

    with gr.Blocks(title="AOT demo", analytics_enabled=False) as app:
        gr.Markdown(f"## AOT: what a compression keeps\nModel: `{model.path}` ({model.family.title}, "
                    f"{model.device}, {model.dtype}, up to {model.max_frames} frames). "
                    "Pick a bundled clip or upload a video, ask a question, choose two compressions."
                    + (" The tiny checkpoint has random weights: its answers are noise, the token accounting is "
                       "real." if model.tiny else ""))
        with gr.Row():
            with gr.Column(scale=1):
                clip = gr.Dropdown(list(clips), value=start_clip, label="bundled clip", elem_id="clip")
                video = gr.File(value=clips[start_clip], label="video (a bundled clip or your upload)",
                                type="filepath", elem_id="video")
            with gr.Column(scale=1):
                question = gr.Textbox(DEFAULT_QUESTION, label="question", elem_id="question")
                with gr.Row():
                    comp_a = gr.Dropdown(choices, value=DEFAULT_COMPRESSIONS[0], allow_custom_value=True,
                                         label="compression A", elem_id="compression_a")
                    comp_b = gr.Dropdown(choices, value=DEFAULT_COMPRESSIONS[1], allow_custom_value=True,
                                         label="compression B", elem_id="compression_b")
                run = gr.Button("Run both", variant="primary", elem_id="run")
        with gr.Row():
            outputs = []
            for key in ("A", "B"):
                with gr.Column():
                    answer = gr.Textbox(label=f"answer {key}", elem_id=f"answer_{key.lower()}", interactive=False)
                    stats = gr.Markdown(elem_id=f"stats_{key.lower()}")
                    image = gr.Image(label=f"tokens kept {key}", type="filepath", elem_id=f"tokens_{key.lower()}",
                                     interactive=False)
                    outputs += [answer, stats, image]
        with gr.Accordion("figures as JSON (what aot infer --json writes, per setting)", open=False):
            figures = gr.JSON(show_label=False, elem_id="figures")
        clip.change(lambda name: clips[name], clip, video, api_visibility="private", show_progress="hidden")
        run.click(on_compare, [video, question, comp_a, comp_b], [*outputs, figures], api_name=API_NAME,
                  concurrency_limit=1)
    return app


def serve(model: DemoModel, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Load the model (:meth:`DemoModel.load`), build the page and serve it on ``host:port`` until interrupted
    (Ctrl-C or SIGTERM; either way the temporary folders are removed)."""
    import signal
    import sys

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit as Ctrl-C does, so atexit cleans up
    model.load()
    app = build_app(model)
    theme = gr.themes.Default(font=list(FONTS), font_mono=list(MONO_FONTS))
    print(f"serving {model.path} ({model.family.title}, {model.device}) on http://{host}:{port}", flush=True)
    app.queue().launch(server_name=host, server_port=port, allowed_paths=[str(tasks_dir())], show_error=True,
                       ssr_mode=False, mcp_server=False, theme=theme, footer_links=["api"], quiet=True)

