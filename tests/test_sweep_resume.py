"""``aot sweep`` run again over its own sweep.json, as a user runs it (subprocesses on the tiny checkpoint and
the smoke task): a SIGTERM'd sweep keeps what finished and the same command continues it; a repeated sweep
skips every run and leaves its runs as they were; a changed ``--limit`` re-runs every run, says why and keeps
the earlier entries; a corrupt sweep.json, an unwritable or full output folder are refused before the model
loads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

from llava.eval import manifest, sweep  # noqa: E402

RETENTIONS = "0.1,0.25"


def _methods() -> str:
    others = [m for m in sweep.available_methods() if m not in ("aot", sweep.FULL)]
    return ",".join(["aot", *others[:1]])


def _command(out: Path, limit: int) -> list[str]:
    return [sys.executable, "-m", "llava.eval.sweep", "--methods", _methods(), "--retentions", RETENTIONS,
            "--limit", str(limit), "--batch-size", "2", "--device", "cpu", "--out", str(out)]


def _sweep(out: Path, limit: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(_command(out, limit), capture_output=True, text=True, timeout=600)


def _runs(out: Path) -> list[dict]:
    return json.loads((out / "sweep.json").read_text())["runs"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A sweep SIGTERM'd after its first finished run, the same command twice, then the same with --limit 1."""
    out = tmp_path_factory.mktemp("resume")
    proc = subprocess.Popen(_command(out, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "sweep.json").is_file() and _runs(out):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, stopped_err = proc.communicate(timeout=600)
    stopped = {"rc": proc.returncode, "err": stopped_err, "runs": _runs(out)}
    continued = _sweep(out)
    continued_runs = _runs(out)
    repeated = _sweep(out)
    repeated_runs = _runs(out)
    changed = _sweep(out, limit=1)
    return {"out": out, "stopped": stopped, "continued": (continued, continued_runs),
            "repeated": (repeated, repeated_runs), "changed": (changed, json.loads((out / "sweep.json").read_text()))}


def test_a_sigtermed_sweep_keeps_what_finished_and_is_continued(resumed):
    stopped = resumed["stopped"]
    assert stopped["rc"] == 128 + signal.SIGTERM, stopped["err"]
    assert "stopped by SIGTERM" in stopped["err"]
    plan = 1 + len(_methods().split(",")) * len(RETENTIONS.split(","))
    kept = stopped["runs"]
    assert 1 <= len(kept) < plan and all(not r["failed"] for r in kept)
    run, runs = resumed["continued"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("finished, skipped") == len(kept)
    assert len(runs) == plan and runs[:len(kept)] == kept  # continued, not replaced
    assert len({r["key"] for r in runs}) == plan and all(r["settings"]["limit"] == 2 for r in runs)
    assert not [p.name for p in resumed["out"].iterdir() if p.name.endswith(".tmp")]


def test_a_repeated_sweep_skips_every_run_and_keeps_its_runs(resumed):
    _, before = resumed["continued"]
    run, after = resumed["repeated"]
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("finished, skipped") == len(before) and after == before
    assert "Full tokens" in (resumed["out"] / "sweep.md").read_text()


def test_a_changed_limit_reruns_every_run_says_why_and_keeps_the_earlier_ones(resumed):
    _, before = resumed["continued"]
    run, data = resumed["changed"]
    assert run.returncode == 0, run.stderr
    assert "finished, skipped" not in run.stdout
    assert run.stdout.count("settings differ from the earlier run in limit: 2 -> 1") == len(before)
    assert [r["samples"] for r in data["runs"]] == [1] * len(before) and data["limit"] == 1
    assert data["other_runs"] == before  # the limit-2 runs stay in the file, out of the table
    assert "| Full tokens |" in (resumed["out"] / "sweep.md").read_text()


def test_the_key_covers_the_compression_content_and_the_versions():
    base = dict(model="m", model_args={"pretrained": "p", "max_frames_num": 8}, task="t", limit=2, batch_size=1,
                versions={"lmms_eval": "1", "aot-video": "2"})
    a = sweep.run_settings("aot", 0.25, **base)
    assert a["compression"]["method"] == "aot" and a["frames"] == 8
    assert manifest.manifest_key(a) == manifest.manifest_key(sweep.run_settings("aot", 0.25, **base))
    for change in ({"versions": {"lmms_eval": "1.1", "aot-video": "2"}}, {"model_args": {"pretrained": "q"}},
                   {"limit": 4}, {"batch_size": 2}, {"task": "u"}):
        assert manifest.manifest_key(sweep.run_settings("aot", 0.25, **{**base, **change})) != manifest.manifest_key(a)
    assert manifest.manifest_key(sweep.run_settings("aot", 0.1, **base)) != manifest.manifest_key(a)
    assert sweep.run_settings(sweep.FULL, None, **base)["compression"] is None


@pytest.mark.parametrize("content, message", [("{not json", "cannot be read as JSON"),
                                               ('{"format": "other/9", "runs": []}', "format 'other/9'")])
def test_a_corrupt_sweep_json_is_refused_and_left_untouched(tmp_path, content, message):
    (tmp_path / "sweep.json").write_text(content)
    run = _sweep(tmp_path)
    assert run.returncode == 2 and message in run.stderr and str(tmp_path / "sweep.json") in run.stderr, run.stderr
    assert (tmp_path / "sweep.json").read_text() == content
    assert not (tmp_path / "tiny-llava-ov").exists()  # refused before the checkpoint or the model


def test_an_unwritable_or_full_output_folder_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = _sweep(blocker / "out")
    assert run.returncode == 2 and "is not writable" in run.stderr, run.stderr
    assert str(blocker / "out") in run.stderr
    monkeypatch.setattr(manifest.shutil, "disk_usage", lambda path: _Usage())
    assert sweep.main(["--out", str(tmp_path / "full"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has 1.0 MB free; expected at least 10 MB" in err and str(tmp_path / "full") in err
    assert not (tmp_path / "full" / "tiny-llava-ov").exists()


class _Usage:
    total, used, free = 2**30, 2**30 - 2**20, 2**20


def _audit(out: Path) -> dict[str, list[int]]:
    """The doc ids each run's cache stored answers for (lmms-eval's audit log, one line per answer)."""
    found: dict[str, list[int]] = {}
    for path in sorted(out.glob(".cache/*/runs/*/rank_*.audit.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        found.setdefault(path.parts[-4], []).extend(a["doc_id"] for a in lines)
    return found


def test_a_sigkilled_sweep_continues_from_its_last_answered_sample(tmp_path):
    command = [sys.executable, "-m", "llava.eval.sweep", "--methods", "aot", "--retentions", "0.25", "--limit", "6",
               "--batch-size", "1", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 400
    while sum(map(len, _audit(tmp_path).values())) < 3:  # three samples of the full-tokens run answered
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the sweep did not answer 3 samples in time"
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=60)
    before = _audit(tmp_path)
    assert len(before) == 1 and len(before[next(iter(before))]) >= 3
    assert not (tmp_path / "sweep.json").exists() or not _runs(tmp_path)  # nothing finished, nothing written
    run = _sweep_command(command)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = _audit(tmp_path)
    full = next(iter(before))
    assert sorted(after[full]) == list(range(6)), after  # each sample answered once over both launches
    assert all(sorted(ids) == list(range(6)) for ids in after.values()) and len(after) == 2
    runs = _runs(tmp_path)
    assert [(r["method"], r["samples"], r["failed"]) for r in runs] == [(sweep.FULL, 6, False), ("aot", 6, False)]
    assert runs[1]["retention"] == pytest.approx(0.25, abs=0.02)


def _sweep_command(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_second_sweep_into_the_same_folder_is_refused_naming_the_first(tmp_path):
    with manifest.WriterLock(tmp_path, "the first sweep"):
        run = _sweep(tmp_path)
    assert run.returncode == 2 and "is being written by" in run.stderr and "the first sweep" in run.stderr, run.stderr
    assert not (tmp_path / "tiny-llava-ov").exists()  # refused before the checkpoint or the model
