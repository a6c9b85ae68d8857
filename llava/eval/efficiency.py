"""Efficiency accounting for lmms-eval runs: what each sample cost, and a per-run summary.

Per sample, the plugin models (:mod:`llava.eval.adapters`) return lmms-eval's own
``GenerationResult`` with a ``TokenCounts`` whose ``input_tokens`` (prefill length: prompt text plus
visual tokens) and ``output_tokens`` lmms-eval aggregates itself (``results["efficiency"]``); the same
object carries the fields of the sample's :class:`llava.model.record.SampleRecord`, so with
``--log_samples`` every line of ``<date>_samples_<task>.jsonl`` holds them under ``token_counts``.

Per run, the plugin reports every rank's accounting through lmms-eval's ``log_metrics`` when the
run's requests are answered, so ``results["throughput"]`` of every entry point (the CLI's
``<date>_results.json``, ``simple_evaluate``'s return value) holds the run's means and its
``avg_failed_samples`` (logged once per run: the run's count). :func:`write_run_summary` writes
``<date>_aot_efficiency.json`` next to ``<date>_results.json``: per task and overall, samples, failed
samples (with their doc ids), the task's scores, and means of the per-sample fields. The table
scripts (``scripts/eval/``) write it after each run, ``aot sweep`` keeps it per run in
``sweep.json``, :func:`summary_of_results` builds it from ``simple_evaluate``'s return value, and
``aot report DIR`` (re)builds it for any results file under ``DIR`` and prints the table.

Definitions:

* ``visual_tokens_plain``: visual tokens LLaVA-NeXT would feed without compression (newlines included).
* ``visual_tokens``: visual tokens fed to the LLM.
* ``retention``: the paper's definition (visual tokens into the LLM, newlines excluded, over frames ×
  pooled tokens per frame); 1.0 without compression.
* ``prefill_tflops``: the paper's formula over the visual tokens (:func:`visionzip.prefill_flops`).
* ``vision_ms`` / ``compression_ms``: vision tower + projector, and AOT, per sample of its batch.
* ``ttft_ms``: from the call to ``generate`` (pixels ready) to the first generated token, for the
  sample's batch; ``load_ms``: decoding and preprocessing the sample's frames.
* ``prefill_ms`` (``aot infer``): prefill without the vision and compression time; ``decode_ms``: the
  rest of ``generate`` after the first token (for the sample's batch); ``decode_ms_per_token``: decode
  milliseconds per generated token after the first (per generation step of the batch: every sequence of
  it gets one token per step); ``e2e_ms``: ``load_ms`` plus the whole ``generate`` call (``aot infer``:
  the call alone, its clip decoded before); ``output_tokens``:
  the tokens generated.
* ``peak_memory_mb``: CUDA max allocated during the sample's batch on a GPU; process peak RSS on CPU.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

FORMAT = "aot-efficiency/1"

#: Per-sample fields averaged in the summary (``<name>_mean``); ``peak_memory_mb`` gets ``_max``.
MEAN_FIELDS = (
    "frames", "visual_tokens_plain", "visual_tokens", "retention", "prefill_tflops", "load_ms", "vision_ms",
    "compression_ms", "ttft_ms", "decode_ms", "decode_ms_per_token", "e2e_ms", "input_tokens", "output_tokens",
)


class FirstTokenClock:
    """A ``generate`` stopping criterion that records when the first generated token exists (the end
    of prefill) and never stops generation."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None  # when the latest generated token existed
        self.steps = 0  # generation steps (tokens generated per sequence of the batch)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.first is None and input_ids.is_cuda:
            torch.cuda.synchronize()
        self.last = time.perf_counter()
        self.first = self.last if self.first is None else self.first
        self.steps += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    @property
    def ms_per_step(self) -> float:
        """Milliseconds per generation step after the first token (0.0 with one step or none): the decode
        cost of one token, for each sequence of the batch at once."""
        if self.steps < 2 or self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first) * 1000 / (self.steps - 1)


def peak_memory_mb(device: Any) -> tuple[float, str]:
    """(MB, what was measured): CUDA max allocated on a GPU, the process's peak RSS otherwise."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def prefill_tflops(visual_tokens: int, config: Any) -> float:
    """The paper's prefill TFLOPs for ``visual_tokens`` through the LLM described by ``config`` (a
    composite config, such as Qwen2.5-VL's, is read through its text config)."""
    import visionzip

    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return visionzip.prefill_flops(int(visual_tokens), layers=config.num_hidden_layers, hidden=config.hidden_size,
                                   ffn=config.intermediate_size) / 1e12


def gather_records(records: list[dict], seconds: float, world_size: int) -> tuple[list[dict], float]:
    """Every rank's per-sample records and generation seconds, on every rank (a collective: each rank
    of a ``world_size`` > 1 run must call it); this process's own when it runs alone."""
    if world_size <= 1:
        return list(records), float(seconds)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size={world_size} but torch.distributed is not initialized; expected the "
                           "process group that accelerate or torchrun set up")
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, (list(records), float(seconds)))
    return [r for part, _ in parts for r in part], sum(s for _, s in parts)


def run_metrics(records: list[dict], seconds: float) -> dict[str, Any]:
    """Keyword arguments of lmms-eval's ``log_metrics`` for one finished run (every rank's ``records``):
    lmms-eval stores them in ``results["throughput"]`` (``avg_<name>`` for the additional metrics, which
    are logged once per run, so each average is the run's own figure)."""
    agg = aggregate(records)
    generated = sum(int(r.get("output_tokens") or 0) for r in records if not r.get("failed"))
    extra: dict[str, Any] = {"total_requests": agg["samples"], "samples": agg["samples"],
                             "failed_samples": agg["failed"]}
    for name in ("visual_tokens", "visual_tokens_plain", "retention", "prefill_tflops", "vision_ms", "compression_ms",
                 "ttft_ms", "decode_ms_per_token", "e2e_ms", "output_tokens"):
        if agg[f"{name}_mean"] is not None:
            extra[name] = agg[f"{name}_mean"]
    if agg["peak_memory_mb_max"] is not None:
        extra["peak_memory_mb"] = agg["peak_memory_mb_max"]
    return {"total_elapsed_time": seconds, "total_gen_tokens": generated,
            "avg_speed": generated / seconds if seconds > 0 else 0.0, "additional_metrics": extra}


# ---------------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------------
def _date_prefix(results_path: Path) -> str:
    name = results_path.name
    if not name.endswith("_results.json"):
        raise ValueError(f"{results_path}: expected an lmms-eval results file named <date>_results.json")
    return name[: -len("_results.json")]


def summary_path(results_path: str | Path) -> Path:
    """``<date>_aot_efficiency.json`` next to ``<date>_results.json``."""
    path = Path(results_path)
    return path.with_name(f"{_date_prefix(path)}_aot_efficiency.json")


def _compression_of(model_args: str) -> str:
    match = re.search(r"(?:^|,)\s*compression\s*=\s*([^,]+)", model_args or "")
    return match.group(1).strip() if match else "none"


def _samples_from_files(results_path: Path, tasks: list[str]) -> dict[str, list[dict]] | None:
    prefix = _date_prefix(results_path)
    out: dict[str, list[dict]] = {}
    for task in tasks:
        file = results_path.with_name(f"{prefix}_samples_{task}.jsonl")
        if not file.is_file():
            return None
        lines = file.read_text(encoding="utf-8").splitlines()
        out[task] = sample_rows([json.loads(line) for line in lines if line.strip()])
    return out


def sample_rows(samples: list[dict]) -> list[dict]:
    """The per-sample accounting in lmms-eval's logged samples (``token_counts[0]`` of each, with its
    ``doc_id``); a sample without it (another model, a cached answer) is marked ``missing``."""
    rows = []
    for sample in samples:
        counts = sample.get("token_counts") or []
        entry = counts[0] if isinstance(counts, list) and counts else None
        if isinstance(entry, dict) and "visual_tokens" in entry:
            rows.append(entry | {"doc_id": sample.get("doc_id", entry.get("doc_id"))})
        else:
            rows.append({"doc_id": sample.get("doc_id"), "missing": True})
    return rows


def aggregate(rows: list[dict]) -> dict[str, Any]:
    """Counts (samples, failed, their doc ids) and the means of :data:`MEAN_FIELDS` over the
    samples that did not fail; ``rows`` are per-sample dicts (``SampleRecord.to_dict()``)."""
    ok = [r for r in rows if not r.get("failed") and not r.get("missing")]
    failed = [r for r in rows if r.get("failed")]
    agg: dict[str, Any] = {
        "samples": len(rows),
        "failed": len(failed),
        "failed_doc_ids": [r.get("doc_id") for r in failed],
        "without_accounting": sum(1 for r in rows if r.get("missing")),
    }
    for name in MEAN_FIELDS:
        values = [float(r[name]) for r in ok if isinstance(r.get(name), (int, float)) and math.isfinite(float(r[name]))]
        agg[f"{name}_mean"] = sum(values) / len(values) if values else None
    retentions = [float(r["retention"]) for r in ok if isinstance(r.get("retention"), (int, float))
                  and math.isfinite(float(r["retention"]))]
    # the spread of retention over the samples (the retention audit's)
    agg["retention_min"] = min(retentions) if retentions else None
    agg["retention_max"] = max(retentions) if retentions else None
    agg["retention_std"] = (statistics.pstdev(retentions) if len(retentions) > 1 else 0.0) if retentions else None
    peaks = [float(r["peak_memory_mb"]) for r in ok if isinstance(r.get("peak_memory_mb"), (int, float))]
    agg["peak_memory_mb_max"] = max(peaks) if peaks else None
    kinds = sorted({r.get("peak_memory_kind") for r in ok if r.get("peak_memory_kind")})
    agg["peak_memory_kind"] = ", ".join(kinds) if kinds else None
    return agg


def summarize(results: dict[str, Any], per_task: dict[str, list[dict]], source: str, results_file: str | None = None
              ) -> dict[str, Any]:
    """The per-run summary of an lmms-eval ``results`` dict, with ``per_task`` per-sample rows."""
    config = results.get("config", {}) or {}
    model_args = config.get("model_args", "")
    if isinstance(model_args, dict):
        model_args = ",".join(f"{k}={v}" for k, v in model_args.items())
    summary: dict[str, Any] = {
        "format": FORMAT,
        "results_file": results_file,
        "model": config.get("model"),
        "model_args": model_args,
        "compression": _compression_of(model_args),
        "source": source,
        "tasks": {},
    }
    all_rows: list[dict] = []
    for task in sorted((results.get("results") or {}).keys()):
        rows = per_task.get(task, [])
        all_rows += rows
        scores = {
            k: v for k, v in (results["results"].get(task) or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k
        }
        summary["tasks"][task] = aggregate(rows) | {"scores": scores}
    summary["overall"] = aggregate(all_rows)
    return summary


def summary_of_results(results: dict[str, Any]) -> dict[str, Any]:
    """The per-run summary of what ``lmms_eval.evaluator.simple_evaluate`` returned (with its
    ``samples``, which it keeps by default: every rank's)."""
    samples = results.get("samples") or {}
    per_task = {task: sample_rows(samples.get(task) or []) for task in (results.get("results") or {})}
    return summarize(results, per_task, "samples")


def check_one_run(results_path: Path, per_task: dict[str, list[dict]]) -> None:
    """``ValueError`` when the logged samples beside ``results_path`` are not one run's: a doc id
    logged twice, or samples of more than one compression (two runs that wrote into one folder)."""
    for task, rows in per_task.items():
        ids = [r.get("doc_id") for r in rows]
        repeated = sorted({str(i) for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"{results_path}: the samples of {task} repeat doc ids {repeated[:5]}; expected one run "
                             "per folder (two runs wrote into it): re-run it into a folder of its own")
        kinds = sorted({str(r["compression"]) for r in rows if r.get("compression") is not None})
        if len(kinds) > 1:
            raise ValueError(f"{results_path}: the samples of {task} mix compressions {kinds}; expected one run per "
                             "folder: re-run it into a folder of its own")


def build_run_summary(results_path: str | Path, records: list[dict] | None = None) -> dict[str, Any]:
    """The per-run summary for one lmms-eval results file.

    Per-sample figures come from the run's ``--log_samples`` files (every rank's samples) when they
    exist, else from ``records`` (per-sample dicts, e.g. the plugin's ``last_run``)."""
    path = Path(results_path)
    results = json.loads(path.read_text(encoding="utf-8"))
    tasks = sorted((results.get("results") or {}).keys())
    per_task = _samples_from_files(path, tasks)
    source = "samples"
    if per_task is not None:
        check_one_run(path, per_task)
    if per_task is None:
        source = "records"
        per_task = {t: [r for r in (records or []) if r.get("task") == t] for t in tasks}
    return summarize(results, per_task, source, path.name)


def write_run_summary(results_path: str | Path, records: list[dict] | None = None) -> Path:
    """Build the summary of ``results_path`` and write it next to it; returns the written path."""
    from llava.eval.manifest import write_json_atomic

    return write_json_atomic(build_run_summary(results_path, records), summary_path(results_path))


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_summary(summary: dict[str, Any]) -> str:
    """A Markdown table of one run: a row per task with its scores and efficiency columns."""
    head = ("| task | compression | score | samples | failed | frames | visual tokens (plain → kept) | retention "
            "| prefill TFLOPs | vision ms | compression ms | TTFT ms | generated tokens | decode ms/token | e2e s "
            "| peak MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for task, t in summary["tasks"].items():
        score = ", ".join(f"{k} {v:.4g}" for k, v in t.get("scores", {}).items()) or "—"
        plain, kept = t.get("visual_tokens_plain_mean"), t.get("visual_tokens_mean")
        tokens = "—" if kept is None else f"{plain:.0f} → {kept:.0f}"
        lines.append(
            f"| {task} | {summary['compression']} | {score} | {t['samples']} | {t['failed']} | "
            f"{_fmt(t.get('frames_mean'), '.0f')} | {tokens} | {_fmt(t.get('retention_mean'), '.4f')} | "
            f"{_fmt(t.get('prefill_tflops_mean'), '.4g')} | {_fmt(t.get('vision_ms_mean'), '.1f')} | "
            f"{_fmt(t.get('compression_ms_mean'), '.1f')} | {_fmt(t.get('ttft_ms_mean'), '.1f')} | "
            f"{_fmt(t.get('output_tokens_mean'), '.1f')} | {_fmt(t.get('decode_ms_per_token_mean'), '.2f')} | "
            f"{_fmt(None if t.get('e2e_ms_mean') is None else t['e2e_ms_mean'] / 1000, '.2f')} | "
            f"{_fmt(t.get('peak_memory_mb_max'), '.0f')} |"
        )
    failed = summary["overall"]["failed"]
    if failed:
        ids = {task: t["failed_doc_ids"] for task, t in summary["tasks"].items() if t["failed"]}
        lines.append(f"\n{failed} sample(s) failed and were scored as wrong: {ids}")
    return "\n".join(lines)


def find_results(root: str | Path, newer_than: float | None = None) -> list[Path]:
    """Every ``*_results.json`` under ``root`` outside hidden folders (``.superseded``) and modified after
    ``newer_than`` (a POSIX time), oldest first."""
    from llava.eval.manifest import results_files

    return [p for p in results_files(root) if newer_than is None or p.stat().st_mtime >= newer_than]


def report(root: str | Path, *, rebuild: bool = False) -> list[dict[str, Any]]:
    """Write the summary of every results file under ``root`` that lacks one (all with ``rebuild``);
    returns the summaries, oldest run first. ``ValueError`` for a folder whose logged samples are not one
    run's (:func:`check_one_run`)."""
    summaries = []
    for results in find_results(root):
        out = summary_path(results)
        if rebuild or not out.is_file():
            write_run_summary(results)
        else:
            build_run_summary(results)  # a folder two runs wrote into is refused even when summarised before
        summaries.append(json.loads(out.read_text(encoding="utf-8")) | {"path": str(out)})
    return summaries
