"""``python -m llava.eval.lmms``: lmms-eval's own command line, with a response cache that resumes per sample.

    python -m llava.eval.lmms --model aot_llava_onevision --model_args pretrained=...,compression=aot@0.1 \\
        --tasks mvbench --batch_size 1 --output_path runs/x --log_samples --use_cache runs/x/.cache

It takes every argument ``python -m lmms_eval`` takes and runs lmms-eval's ``cli_evaluate``. Two things
differ, both in :class:`SampleResponseCache`, which it gives lmms-eval in place of its ``ResponseCache``
(``lmms_eval.evaluator.ResponseCache``, set here, in this entry point only):

* **answers are stored as they come**, a batch at a time: lmms-eval's cache stores a request list only
  once the whole list returns, so a killed evaluation (``kill -9`` included) lost every answer. Here a
  killed run loses at most the batch in flight, and the same command continues from the next request.
  Batches are then formed from consecutive requests (lmms-eval's order) rather than across the whole
  list; at ``--batch_size 1`` nothing differs.
* **a failed sample is never cached as an answer.** The plugin answers a failed sample with a wrong
  choice so that it is scored as wrong; lmms-eval's cache would store that letter like an answer, and a
  re-run after the video is fixed would serve it and count 0 failed. Here a failed sample (and a
  log-likelihood of -inf) is not stored, so a re-run tries it again, and reports it failed again if it
  still fails.
* **the accounting survives the cache**: with a plugin answer the cache keeps the sample's per-sample
  record (visual tokens, retention, TFLOPs, timings) beside the text and gives it back on a hit, so the
  logged samples and ``aot report`` cover every sample, those answered before the restart included.

Before lmms-eval starts, a captioning task needs ``java`` on ``PATH``
(:func:`llava.eval.task_names.check_scorer_tools`), and ``--output_path`` is checked writable with room
(64 MB), so an evaluation never computes results it cannot save (lmms-eval itself logs a failed save and
exits 0), and taken for this process: a second evaluation writing into the same folder is refused, naming the first.
"""

from __future__ import annotations

import sys
from typing import Any

from lmms_eval.api.instance import GenerationResult
from lmms_eval.caching.response_cache import ResponseCache

_MARK = "aot-sample/1"


class SampleResponseCache(ResponseCache):
    """lmms-eval's ``ResponseCache``, storing answers a batch at a time, never a failed sample's, and
    keeping the plugin's per-sample record with each answer (see the module docstring)."""

    @classmethod
    def create(cls, cache_root: str, *, model: Any = "", **kwargs: Any) -> ResponseCache:
        # lmms-eval fingerprints the model as str(model): for a model object (simple_evaluate(model=lm), as
        # aot sweep calls it) that holds its memory address, which differs at every launch, so no answer
        # would ever be found again. An object is named by its class; its settings are the cache folder's.
        if not isinstance(model, str):
            model = f"{type(model).__module__}.{type(model).__qualname__}"
        return super().create(cache_root, model=model, **kwargs)

    def execute(self, lm: Any, reqtype: str, requests: list) -> list:
        step = max(1, int(getattr(lm, "batch_size", 1) or 1))
        adopt = getattr(lm, "adopt_records", None)
        out: list = []
        for start in range(0, len(requests), step):
            self._restored: list[dict] = []
            out.extend(super().execute(lm, reqtype, requests[start:start + step]))
            if self._restored and adopt is not None:
                adopt(self._restored)  # the run's accounting (lmms-eval's throughput) covers cached samples too
        return out

    @staticmethod
    def _extract_cacheable(response: Any) -> Any:
        if isinstance(response, GenerationResult):
            record = getattr(response.token_counts, "efficiency", None)
            if record:
                return {"format": _MARK, "text": response.text, "record": record}
            return response.text
        return response

    @staticmethod
    def _failed(response: Any) -> bool:
        """Whether ``response`` (as returned by the model, or its cacheable form) is a failed sample's."""
        if isinstance(response, GenerationResult):
            return bool((getattr(response.token_counts, "efficiency", None) or {}).get("failed"))
        if isinstance(response, dict) and response.get("format") == _MARK:
            return bool(response["record"].get("failed"))
        return isinstance(response, (list, tuple)) and bool(response) and response[0] == float("-inf")

    @staticmethod
    def _is_valid_response(response: Any, request_type: str) -> bool:
        if SampleResponseCache._failed(response):
            return False
        return ResponseCache._is_valid_response(response, request_type)

    def _log_to_audit(self, request_type: str, task_name: str, doc_id: Any, idx: int, gen_kwargs: dict,
                      response: Any, **fields: Any) -> None:
        # lmms-eval replays audit lines that carry a cache key into the cache after a crash; a failed
        # sample's line is logged without one, so that it is never replayed as an answer
        if self._failed(response):
            fields["cache_key"] = ""
        super()._log_to_audit(request_type, task_name, doc_id, idx, gen_kwargs, response, **fields)

    def _lookup(self, cache_key: str) -> Any:
        stored = super()._lookup(cache_key)
        if isinstance(stored, dict) and stored.get("format") == _MARK:
            from llava.eval.adapters.base import EfficiencyCounts

            record = dict(stored["record"])
            getattr(self, "_restored", []).append(record)
            counts = EfficiencyCounts(input_tokens=record.get("input_tokens"),
                                      output_tokens=record.get("output_tokens"), efficiency=record)
            return GenerationResult(text=stored["text"], token_counts=counts)
        return stored


def install() -> None:
    """Make lmms-eval's evaluator create :class:`SampleResponseCache` for ``--use_cache``."""
    from lmms_eval import evaluator

    evaluator.ResponseCache = SampleResponseCache


def _argument(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    from llava.eval import manifest
    from llava.eval.task_names import check_scorer_tools

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_scorer_tools((_argument(argv, "--tasks") or "").split(","))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output = _argument(argv, "--output_path")
    lock = None
    if output:
        try:
            manifest.check_writable(output)
            lock = manifest.WriterLock(output, "python -m llava.eval.lmms " + " ".join(argv)[:200]).acquire()
        except (OSError, RuntimeError) as err:
            print(f"error: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            return 2
    install()
    from lmms_eval.__main__ import cli_evaluate

    sys.argv = ["lmms_eval", *argv]
    try:
        cli_evaluate()
    finally:
        if lock is not None:
            lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
