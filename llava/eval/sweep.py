"""``aot sweep``: compression methods × retentions on one lmms-eval task, as one table and one plot.

    aot sweep                     # CPU: tiny checkpoint, smoke task, every method at 10/15/20/25 %
    aot sweep --methods aot,visionzip --retentions 0.1,0.25 --limit 4 --out runs/sweep_quick
    OV=pretrained=lmms-lab/llava-onevision-qwen2-7b-ov,conv_template=qwen_1_5,model_name=llava_qwen
    python -m llava.eval.sweep --device cuda --task mvbench --out runs/sweep/ov7b_mvbench \\
        --model-args $OV,max_frames_num=32,torch_dtype=bfloat16
    accelerate launch --num_processes 8 -m llava.eval.sweep --device cuda --task mvbench \\
        --out runs/sweep/ov7b_mvbench --model-args $OV,max_frames_num=32,torch_dtype=bfloat16

One process (one per GPU under ``accelerate launch``) imports lmms-eval once and loads the plugin model
once with ``compression=none``; then, for the full-token reference and for every (method, retention),
it switches the model instance's compression (``model.set_compression("<method>@<retention>")``) and
calls ``lmms_eval.evaluator.simple_evaluate`` on the same model object. Under ``accelerate launch``
simple_evaluate splits the documents over the processes and gathers the samples on rank 0, which
alone writes the outputs.

Per run, the score is ``results["results"][task][metric]``; the efficiency figures are the means over
the run's samples of the plugin's per-sample accounting (:mod:`llava.eval.efficiency`: visual tokens,
retention as the paper counts it, prefill TFLOPs, compression milliseconds), read from the logged
samples of every rank. A run that raises (a setting a method rejects, an error inside lmms-eval)
is recorded as failed and the sweep goes on; so is a run whose every sample failed.

Outputs, in ``--out``:

* ``sweep.json``: the settings and one entry per run (method, target and measured retention, visual
  tokens, prefill TFLOPs, compression ms, score, samples, failed samples, seconds, error, and
  lmms-eval's results dict without the samples, the run's ``settings`` and their ``key``), written
  again after every run;
* ``sweep.md``: a table of score (measured retention) per method and target retention, with the
  full-token row, then one line per run with its efficiency figures, then the failed runs;
* ``sweep.png``: score against measured retention and against prefill TFLOPs, a line per method,
  full tokens as the reference.

Resuming: every run is keyed by its settings (:func:`run_settings`: the plugin model and its arguments,
task, limit, batch size, frames, the compression resolved to its content, so an edited preset YAML is a
change, and the versions of lmms-eval and of this package; the key is the sha256 of their canonical JSON).
On start the sweep reads an existing ``sweep.json`` (one it cannot read is refused and left untouched): a
run with the same key that finished is skipped ("finished, skipped"), a failed or missing one runs; where
sweep.json has the same (method, retention) under other settings, the sweep names the fields that differ.
Entries of other settings stay in the file under ``other_runs``; ``runs``, the table and the plot are the
current plan's. Every file is written atomically (a temporary file in ``--out``, fsync, rename). SIGINT
or SIGTERM stops the sweep after writing the runs that finished (exit status 130 or 143); the same
command continues it. Inside a run, answers are stored per sample in ``<out>/.cache/<key>`` (lmms-eval's
``use_cache`` with :class:`llava.eval.lmms.SampleResponseCache`), so a sweep killed part-way, by SIGKILL
too, continues from the last answered sample; a failed sample is never stored and is tried again. One
sweep writes to an ``--out`` at a time (:class:`llava.eval.manifest.WriterLock`). ``--out`` is checked
writable, with :data:`MIN_FREE_MB` free, before the model loads, and the model loads only when a run is
left to do.

``--model`` is the lmms-eval plugin model of a registered family (:mod:`llava.families`). Without
``pretrained=`` in ``--model-args`` the family's tiny random-weight checkpoint
(:class:`llava.families.TinySpec`) is written to ``--out`` if missing and used with the model
arguments the spec gives (``tiny-llava-ov`` with 32 frames for the LLaVA-NeXT families, 16 frames for
the Qwen-VL ones); its scores are noise, its accounting is real. ``--model aot_qwen2_5_vl --model-args
pretrained=Qwen/Qwen2.5-VL-7B-Instruct,...`` sweeps a real Qwen2.5-VL checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import visionzip
from llava.eval import efficiency as eff
from llava.eval import manifest
from llava.families import DEFAULT_FAMILY, family_of_plugin, get_family, plugin_models
from llava.subcommand import run_subcommand

FORMAT = "aot-sweep/1"
FULL = "full"
DEFAULT_RETENTIONS = (0.10, 0.15, 0.20, 0.25)
DEFAULT_TASK = "aot_smoke_mcq"
DEFAULT_METRIC = "acc,none"
#: the plugin model of the default family (the smoke evaluation's)
DEFAULT_MODEL = get_family(DEFAULT_FAMILY).plugin.model_id


# ------------------------------------------------------------------------------------------- methods


def available_methods() -> list[str]:
    """The compression methods of ``visionzip`` (``full`` included)."""
    return list(visionzip.list_methods())


def compression_spec(method: str, retention: float | None) -> str | None:
    """What ``model.set_compression`` takes for ``method`` at ``retention``: ``"<method>@<retention>"``,
    or None for full tokens."""
    if method == FULL:
        return None
    if retention is None:
        raise ValueError(f"method {method!r} needs a retention; expected a fraction in (0, 1]")
    return f"{method}@{retention:g}"


# ------------------------------------------------------------------------------------------- parsing


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_methods(text: str | None) -> list[str]:
    """``--methods``: comma-separated names (default: every method but ``full``, which always runs)."""
    known = available_methods()
    if text is None:
        return [m for m in known if m != FULL]
    methods = list(dict.fromkeys(_csv(text)))
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"--methods {text!r}: unknown {unknown}; expected a comma-separated subset of {known}")
    return [m for m in methods if m != FULL]


def parse_retentions(text: str) -> list[float]:
    """``--retentions``: comma-separated fractions in (0, 1]."""
    values = []
    for item in _csv(text):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--retentions {text!r}: {item!r} is not a number; "
                             "expected fractions such as 0.1,0.25") from None
        if not 0 < value <= 1:
            raise ValueError(f"--retentions {text!r}: {item} is outside (0, 1]; expected fractions such as 0.1,0.25")
        values.append(value)
    if not values:
        raise ValueError(f"--retentions {text!r}: expected at least one fraction such as 0.1")
    return sorted(set(values))


def parse_limit(text: str | None) -> int | float | None:
    """``--limit``: a document count (int) or a fraction of the task (float below 1), as lmms-eval's."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--limit {text!r} is not a number; expected a document count or a fraction below 1") from None
    if value <= 0:
        raise ValueError(f"--limit {text!r}: expected a positive count or fraction")
    return value if value < 1 else int(value)


def model_args_for(text: str | None, out: Path, device: str, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The plugin's model arguments: ``--model-args`` parsed as lmms-eval parses them, the family's tiny
    checkpoint (written under ``out`` if missing, :class:`llava.families.TinySpec`) when no ``pretrained``
    is given."""
    from lmms_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(text or "")
    if "compression" in args:
        raise ValueError("--model-args: leave out compression=; the sweep sets it per run")
    if "pretrained" not in args:
        try:
            tiny = family_of_plugin(model).tiny
        except ValueError as exc:
            raise ValueError(f"--model {model!r}: {exc}; or give pretrained= in --model-args") from None
        ckpt = out / tiny.folder
        if not (ckpt / "config.json").is_file():
            tiny.writer(ckpt)
        args = {"pretrained": str(ckpt), **tiny.args, **args}
    if device == "cpu":
        args.setdefault("torch_dtype", "float32")  # the plugin's float16 default is a GPU setting
    return args


# ------------------------------------------------------------------------------------------- running


@dataclass
class SweepRun:
    """One (method, retention) evaluation: its settings, score and efficiency means."""

    method: str
    target_retention: float | None  # None for full tokens
    spec: str
    failed: bool = False
    error: str | None = None
    score: float | None = None
    retention: float | None = None  # measured: mean over the run's samples
    visual_tokens: float | None = None
    visual_tokens_plain: float | None = None
    prefill_tflops: float | None = None
    compression_ms: float | None = None
    vision_ms: float | None = None
    ttft_ms: float | None = None
    samples: int = 0
    failed_samples: int = 0
    seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)  # the run's efficiency summary (every rank's samples)
    key: str | None = None  # manifest_key(settings): a later sweep with the same key reuses this run
    settings: dict[str, Any] = field(default_factory=dict)  # run_settings(): everything the run depends on


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _fill(run: SweepRun, results: dict[str, Any], rows: list[dict], task: str, metric: str) -> None:
    agg = eff.aggregate(rows)
    run.samples, run.failed_samples = agg["samples"], agg["failed"]
    for name in ("retention", "visual_tokens", "visual_tokens_plain", "prefill_tflops", "compression_ms", "vision_ms",
                 "ttft_ms"):
        setattr(run, name, agg[f"{name}_mean"])
    scores = (results.get("results") or {}).get(task) or {}
    run.score = _number(scores.get(metric))
    run.results = {k: v for k, v in results.items() if k != "samples"}
    run.efficiency = eff.summary_of_results(results)
    if rows and agg["failed"] == len(rows):
        first = next((r.get("error") for r in rows if r.get("error")), None)
        run.failed, run.error = True, f"every sample failed; first error: {first}"
    elif run.score is None:
        have = sorted(k for k in scores if k != "alias")
        run.failed, run.error = True, f"metric {metric!r} not in the results of {task}; they have {have}"


def _set_compression(lm: Any, spec: str | None) -> None:
    lm.set_compression(spec)  # the model's setting and the name the per-sample records carry


@contextmanager
def _cache_run_id(run_id: str | None) -> Iterator[None]:
    """``LMMS_CACHE_RUN_ID=run_id`` while one run evaluates: lmms-eval names the cache's write folder by
    it, so the same run's next launch reopens the answers it stored (and not a fresh random folder)."""
    if run_id is None:
        yield
        return
    before = os.environ.get("LMMS_CACHE_RUN_ID")
    os.environ["LMMS_CACHE_RUN_ID"] = run_id
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LMMS_CACHE_RUN_ID", None)
        else:
            os.environ["LMMS_CACHE_RUN_ID"] = before


def run_one(lm: Any, method: str, retention: float | None, *, task: str, task_manager: Any, metric: str,
            limit: int | float | None, batch_size: int, device: str | None,
            cache: Path | None = None) -> SweepRun | None:
    """Evaluate ``lm`` with ``method`` at ``retention`` on ``task``. Returns the run on rank 0, None on
    the other ranks. Any exception is recorded in the run, never raised. With ``cache`` (a folder of this
    run's settings) the answers go through lmms-eval's ``use_cache`` with
    :class:`llava.eval.lmms.SampleResponseCache`: a run killed part-way continues from its last answered
    sample, and a failed sample is tried again."""
    from lmms_eval.evaluator import simple_evaluate

    run = SweepRun(method, retention, FULL if method == FULL else f"{method}@{retention:g}")
    # the plugin's clean() keeps the model when lmms-eval's evaluate() ends, so one instance serves every run
    start = time.perf_counter()
    try:
        spec = compression_spec(method, retention)
        run.spec = spec or FULL
        _set_compression(lm, spec)
        with _cache_run_id(cache.name if cache is not None else None):
            results = simple_evaluate(model=lm, tasks=[task], limit=limit, batch_size=batch_size, device=device,
                                      log_samples=True, task_manager=task_manager, verbosity="WARNING",
                                      use_cache=None if cache is None else str(cache))
        if results is not None:
            _fill(run, results, eff.sample_rows((results.get("samples") or {}).get(task, [])), task, metric)
    except Exception as exc:  # noqa: BLE001 - one run failing is recorded; the sweep goes on
        run.failed, run.error = True, f"{type(exc).__name__}: {exc}"
        print(f"aot sweep: {run.spec} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        results = {} if getattr(lm, "rank", 0) == 0 else None
    run.seconds = time.perf_counter() - start
    return run if results is not None else None


# ------------------------------------------------------------------------------------------- outputs


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return list(value) if isinstance(value, (set, tuple)) else str(value)


def write_json(data: dict[str, Any], path: Path) -> Path:
    return manifest.write_text_atomic(json.dumps(data, indent=2, default=_jsonable) + "\n", path)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return "—"
    if run["failed"]:
        return "failed"
    retention = "" if run["retention"] is None else f" ({_pct(run['retention'])})"
    return f"{run['score']:.4g}{retention}"


def render_markdown(data: dict[str, Any]) -> str:
    """The sweep as Markdown: score (measured retention) per method × target, then every run."""
    runs = data["runs"]
    targets = data["retentions"]
    head = ["Method", *(f"{100 * t:g} %" for t in targets), "Full"]
    limit = "all" if data["limit"] is None else data["limit"]
    lines = [f"### Sweep: {data['task']}, {data['metric']} ({Path(data['model_args'].get('pretrained', '?')).name}, "
             f"limit {limit})", "", "Score (measured retention) per method and target retention.", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for method in [FULL, *data["methods"]]:
        mine = [r for r in runs if r["method"] == method]
        if method == FULL:
            cells = ["—"] * len(targets) + [_cell(mine[0] if mine else None)]
            label = "Full tokens"
        else:
            by_target = {round(r["target_retention"], 6): r for r in mine}
            cells = [_cell(by_target.get(round(t, 6))) for t in targets] + ["—"]
            label = method
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += ["", "| Method | Target | Retention | Visual tokens | Prefill TFLOPs | Compression ms | Score | Samples "
              "| Failed samples | Seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        target = "100 %" if r["target_retention"] is None else _pct(r["target_retention"])
        if r["failed"] and r["samples"] == 0:
            lines.append(f"| {r['method']} | {target} | failed | — | — | — | — | — | — | {r['seconds']:.1f} |")
            continue
        lines.append(
            f"| {r['method']} | {target} | {'—' if r['retention'] is None else _pct(r['retention'])} | "
            f"{_fmt(r['visual_tokens'], '.0f')} | {_fmt(r['prefill_tflops'], '.4g')} | "
            f"{_fmt(r['compression_ms'], '.1f')} | "
            f"{_fmt(r['score'], '.4g')} | {r['samples']} | {r['failed_samples']} | {r['seconds']:.1f} |"
        )
    failed = [r for r in runs if r["failed"]]
    if failed:
        lines += ["", f"Failed runs ({len(failed)}):"]
        lines += [f"- {r['spec']}: {r['error']}" for r in failed]
    lines += ["", "Retention: visual tokens into the LLM (newlines excluded) over frames × pooled tokens per frame; "
              "TFLOPs: prefill over the visual tokens (the paper's formula); both means over the run's samples."]
    return "\n".join(lines) + "\n"


def render_plot(data: dict[str, Any], path: str | Path) -> Path:
    """Two panels: score against measured retention and against prefill TFLOPs, a line per method,
    full tokens as a dashed reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    done = [r for r in data["runs"] if not r["failed"] and r["score"] is not None]
    full = next((r for r in done if r["method"] == FULL), None)
    panels = (("retention", "measured retention (%)", 100.0), ("prefill_tflops", "prefill TFLOPs (visual tokens)", 1.0))
    for ax, (key, xlabel, factor) in zip(axes, panels):
        for i, method in enumerate(data["methods"]):
            points = sorted((r[key] * factor, r["score"]) for r in done if r["method"] == method and r[key] is not None)
            if points:
                ax.plot(*zip(*points), "o-", color=f"C{i % 10}", label=method, ms=4)
        if full is not None:
            ax.axhline(full["score"], color="gray", ls="--", lw=1, label=f"full tokens ({full['score']:.3g})")
            if full[key] is not None:
                ax.plot([full[key] * factor], [full["score"]], "*", color="black", ms=9)
        if not done:
            ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes, color="gray")
        scores = [r["score"] for r in done]
        if scores and max(scores) - min(scores) < 1e-9:  # one value (a random model scores 0 everywhere)
            pad = 0.05 * max(1.0, abs(scores[0]))
            ax.set_ylim(scores[0] - pad, scores[0] + pad)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(data["metric"])
        ax.grid(alpha=0.3)
        if key == "prefill_tflops" and any(r[key] for r in done):
            ax.set_xscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{data['task']}: {data['metric']} against retention and prefill TFLOPs")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format="png")
    plt.close(fig)
    return manifest.write_bytes_atomic(buffer.getvalue(), path)


# ------------------------------------------------------------------------------------------- resuming

#: the least free space ``--out`` must have before the model loads (sweep.json, sweep.md, sweep.png)
MIN_FREE_MB = 10


class SweepStopped(BaseException):
    """SIGINT or SIGTERM arrived: the sweep writes what finished and exits with 128 + the signal number.
    A BaseException, so that :func:`run_one` does not record it as a failed run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def stop(signum: int, frame: Any) -> None:
        raise SweepStopped(signum)

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: the signals keep their handlers
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def compression_content(spec: str | None) -> dict[str, Any] | None:
    """:func:`llava.eval.manifest.compression_content` of ``spec`` (a preset's YAML as it reads now); None
    for full tokens; ``{"spec", "unresolved"}`` when it does not resolve (the run then fails)."""
    if spec is None:
        return None
    try:
        return manifest.compression_content(spec)
    except Exception as exc:  # noqa: BLE001 - recorded; run_one reports the same error as the run's
        return {"spec": spec, "unresolved": f"{type(exc).__name__}: {exc}"}


def run_settings(method: str, retention: float | None, *, model: str, model_args: dict[str, Any], task: str,
                 limit: int | float | None, batch_size: int, versions: dict[str, str | None]) -> dict[str, Any]:
    """Everything a run's numbers depend on: the plugin model and its arguments, the task, the limit, the
    batch size, the frames, the compression resolved to its content, and the versions of lmms-eval and
    of this package."""
    spec = None if method == FULL else compression_spec(method, retention)
    return {"model": model, "model_args": dict(model_args), "task": task, "limit": limit, "batch_size": batch_size,
            "frames": model_args.get("max_frames_num"), "method": method, "target_retention": retention,
            "compression": compression_content(spec), "versions": dict(versions)}


def read_sweep(path: Path) -> list[dict[str, Any]]:
    """The runs (shown and kept) of an existing sweep.json; [] when there is none. A file that is not a
    sweep.json of :data:`FORMAT` raises a ValueError naming it, and is left as it is."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read as JSON ({exc}); expected a sweep.json of format {FORMAT!r}. "
                         "It is left untouched: move it away or choose another --out") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    others = data.get("other_runs", []) if isinstance(data, dict) else None
    ok = (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(runs, list)
          and isinstance(others, list) and all(isinstance(e, dict) for e in runs + others))
    if not ok:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a sweep.json this version reads (format {found!r}, expected {FORMAT!r} "
                         "with a list of runs). It is left untouched: move it away or choose another --out")
    return [*runs, *others]


def rerun_reason(previous: list[dict[str, Any]], method: str, retention: float | None, settings: dict[str, Any],
                 key: str) -> str | None:
    """Why a run that sweep.json already has for (method, retention) runs again; None when it has none."""
    same = [e for e in previous if e.get("method") == method and e.get("target_retention") == retention]
    if not same:
        return None
    if any(e.get("key") == key for e in same):
        return "re-runs: the earlier run with these settings failed"
    recorded = [e for e in same if isinstance(e.get("settings"), dict)]
    if not recorded:
        return "re-runs: the earlier run records no settings"
    return "re-runs: settings differ from the earlier run in " + ", ".join(manifest.diff(recorded[-1]["settings"],
                                                                                        settings))


def check_output_folder(out: Path, min_free_mb: float = MIN_FREE_MB) -> None:
    """``out`` is a folder this process can write to (created if missing) with ``min_free_mb`` free; a
    ValueError naming it otherwise (:func:`llava.eval.manifest.check_writable`)."""
    try:
        manifest.check_writable(out, min_free_mb)
    except OSError as exc:
        raise ValueError(f"--out: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"plugin model of a registered family: {', '.join(sorted(plugin_models()))}")
    parser.add_argument("--model-args", help="lmms-eval model_args without compression (pretrained=...,"
                        "max_frames_num=32,...); default: the family's tiny checkpoint in <out>, e.g. "
                        f"{get_family(DEFAULT_FAMILY).tiny.folder}")
    parser.add_argument("--methods", help="comma-separated compression methods (default: all but full; full tokens "
                        "always run once)")
    parser.add_argument("--retentions", default=",".join(f"{r:g}" for r in DEFAULT_RETENTIONS),
                        help="comma-separated target retentions in (0, 1]")
    parser.add_argument("--task", default=DEFAULT_TASK, help="one lmms-eval task")
    parser.add_argument("--include-path",
                        help="extra lmms-eval task folder (default: this package's, `aot paths tasks`)")
    parser.add_argument("--limit", help="documents per run: a count, or a fraction of the task below 1 (default: all)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available (one GPU per process)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="the results key scored, as lmms-eval names it")
    parser.add_argument("--out", default="runs/sweep", help="folder for sweep.json, sweep.md, sweep.png")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    methods = parse_methods(args.methods)
    retentions = parse_retentions(args.retentions)
    limit = parse_limit(args.limit)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected an integer >= 1")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    check_output_folder(out)  # before the tiny checkpoint is written or any model loads
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:
        try:  # one writer per --out: a second sweep into it is refused, naming the first
            lock = manifest.WriterLock(out, "aot sweep " + " ".join(sys.argv[1:])[:200]).acquire()
        except RuntimeError as exc:
            raise ValueError(f"--out: {exc}") from None
    try:
        return _sweep(args, out, device, limit, methods, retentions)
    finally:
        if lock is not None:
            lock.release()


def _sweep(args: argparse.Namespace, out: Path, device: str, limit: int | float | None, methods: list[str],
           retentions: list[float]) -> int:
    from llava.eval import lmms

    lmms.install()  # use_cache gets the per-sample response cache of `python -m llava.eval.lmms`
    previous = read_sweep(out / "sweep.json")
    model_args = model_args_for(args.model_args, out, device, args.model)

    started = time.perf_counter()
    plan = [(FULL, None)] + [(m, r) for m in methods for r in retentions]
    known = manifest.versions()
    settings = [run_settings(m, r, model=args.model, model_args=model_args, task=args.task, limit=limit,
                             batch_size=args.batch_size, versions=known) for m, r in plan]
    keys = [manifest.manifest_key(s) for s in settings]
    earlier: dict[str, dict[str, Any]] = {}  # by key; a finished entry over a failed one
    for entry in previous:
        if entry.get("key") and (entry["key"] not in earlier or not entry.get("failed")):
            earlier[entry["key"]] = entry
    data: dict[str, Any] = {
        "format": FORMAT, "task": args.task, "metric": args.metric, "model": args.model, "model_args": model_args,
        "methods": methods, "retentions": retentions, "limit": limit, "batch_size": args.batch_size, "device": device,
        "world_size": 1, "versions": known, "seconds": 0.0, "runs": [],
        "other_runs": [e for e in previous if e.get("key") not in keys],  # other settings: kept, not shown
    }
    # the plan's runs sweep.json has: a finished one is skipped, a failed one runs again (and is replaced)
    entries: dict[int, dict[str, Any]] = {i: earlier[k] for i, k in enumerate(keys) if k in earlier}
    rank0 = int(os.environ.get("RANK", "0")) == 0
    state: dict[str, Any] = {}

    def save() -> None:
        data["runs"] = [entries[i] for i in sorted(entries)]
        data["seconds"] = time.perf_counter() - started
        write_json(data, out / "sweep.json")

    def model() -> Any:  # loaded once, at the first run that is not skipped
        if "lm" not in state:
            from lmms_eval.models import get_model

            from llava.eval.task_names import task_manager as _task_manager

            state["tasks"] = _task_manager([args.task], [args.include_path] if args.include_path else [])
            text = ",".join(f"{k}={v}" for k, v in model_args.items())
            state["lm"] = get_model(args.model).create_from_arg_string(text, {"batch_size": args.batch_size,
                                                                                "device": device})
            data["world_size"] = getattr(state["lm"], "world_size", 1)
        return state["lm"]

    stopped = None
    with _stop_on_signals():
        try:
            for i, (method, retention) in enumerate(plan):
                name = FULL if retention is None else f"{method} @ {_pct(retention)}"
                label = f"aot sweep [{i + 1}/{len(plan)}] {name}"
                if i in entries and not entries[i].get("failed"):
                    if rank0:
                        print(f"{label}: finished, skipped (sweep.json has it with the same settings)", flush=True)
                    continue
                lm = model()
                rank0 = getattr(lm, "rank", 0) == 0
                if rank0:
                    why = rerun_reason(previous, method, retention, settings[i], keys[i])
                    print(f"{label}{f' ({why})' if why else ''}", flush=True)
                result = run_one(lm, method, retention, task=args.task, task_manager=state["tasks"],
                                 metric=args.metric, limit=limit, batch_size=args.batch_size, device=device,
                                 cache=out / manifest.CACHE_DIR / keys[i][:16])
                if result is not None and rank0:
                    result.key, result.settings = keys[i], settings[i]
                    entries[i] = asdict(result)
                    save()
                    status = f"failed: {result.error}" if result.failed else (
                        f"score {_fmt(result.score, '.4g')}, retention {_fmt(result.retention, '.4f')}, "
                        f"{_fmt(result.prefill_tflops, '.4g')} TFLOPs")
                    print(f"{label}: {status} ({result.seconds:.1f} s)", flush=True)
        except SweepStopped as exc:
            stopped = exc.signum
    if not rank0:
        return 0 if stopped is None else 128 + stopped
    save()
    markdown = render_markdown(data)
    manifest.write_text_atomic(markdown, out / "sweep.md")
    if stopped is not None:
        name = signal.Signals(stopped).name
        print(f"aot sweep: stopped by {name} after {len(entries)} of {len(plan)} runs; wrote {out / 'sweep.json'} "
              "and sweep.md; the same command continues with the runs left", file=sys.stderr, flush=True)
        return 128 + stopped
    render_plot(data, out / "sweep.png")
    print(f"\n{markdown}\n{len(plan)} runs in {data['seconds']:.0f} s; wrote {out / 'sweep.json'}, "
          f"{out / 'sweep.md'}, {out / 'sweep.png'}")
    failed = [r for r in data["runs"] if r["failed"]]
    if failed:
        print(f"aot sweep: {len(failed)} of {len(plan)} runs failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r['spec']}: {r['error']}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m llava.eval.sweep ...`` = ``aot sweep ...``."""
    return run_subcommand("sweep", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
