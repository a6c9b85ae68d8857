"""Every table cell is the run its row describes, and a killed run loses only what was in flight.

Through the user's own paths: ``scripts/eval/_run_table.sh`` (which runs ``python -m llava.eval.runner``),
``python -m llava.eval.lmms`` / ``python -m lmms_eval`` with the plugin, and ``aot report``, on a tiny
random-weight LLaVA-OneVision checkpoint and a copy of the offline smoke task.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llava.eval import manifest as mf

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "eval" / "_run_table.sh"
SMOKE = ROOT / "lmms_eval_tasks" / "aot_smoke"
MODEL_ARGS = {"max_frames_num": 8, "torch_dtype": "float32", "conv_template": "qwen_1_5", "model_name": "llava_qwen"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llava-ov")


def _tasks(root: Path, n: int = 6, missing: tuple[int, ...] = ()) -> Path:
    """A copy of the smoke task with its first ``n`` documents; those in ``missing`` name a missing video."""
    task_dir = root / "tasks" / "aot_smoke"
    shutil.copytree(SMOKE, task_dir, ignore=shutil.ignore_patterns("__pycache__"))
    docs = [json.loads(line) for line in (SMOKE / "data.jsonl").read_text().splitlines() if line.strip()][:n]
    for i in missing:
        docs[i]["video"] = "missing.mp4"
    (task_dir / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return root / "tasks"


def _table(path: Path, ckpt: Path, tasks: Path, rows: list[dict], *, limit: int | None = None,
           model_args: dict | None = None) -> Path:
    lmms_args = {"device": "cpu", "include_path": str(tasks)}
    if limit is not None:
        lmms_args["limit"] = limit
    table = {
        "name": path.stem, "title": "integrity", "model": "aot_llava_onevision",
        "model_args": {"pretrained": str(ckpt), **(model_args or MODEL_ARGS)}, "launcher": "python",
        "batch_size": 1, "lmms_args": lmms_args, "output_dir": str(path.parent / "runs"),
        "model_shape": {"layers": 2, "hidden": 64, "ffn": 128, "tokens_per_frame": 196},
        "columns": [{"label": "Smoke", "task": "aot_smoke_mcq", "metric": "acc,none", "scale": "fraction"}],
        "rows": rows,
    }
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return path


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ROWS", "COLUMNS", "FORCE", "DRY_RUN", "OUTPUT_DIR")}
    env.setdefault("PYTHON", sys.executable)
    env.update(extra)
    return env


def _run_table(table: Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(table)], env=_env(**env), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _cell(runs: Path) -> dict:
    return json.loads((runs / "table.json").read_text())["rows"][0]["cells"]["Smoke"]


def _samples(run_dir: Path) -> list[dict]:
    files = mf.results_files(run_dir)
    assert len(files) == 1, files
    path = files[0].with_name(files[0].name.replace("_results.json", "_samples_aot_smoke_mcq.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _audit(run_dir: Path) -> list[dict]:
    """Every answer the model gave (lmms-eval's cache audit log: one line per request run, cached or not)."""
    lines = []
    for path in sorted(run_dir.glob(".cache/*/runs/*/rank_*.audit.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


# ------------------------------------------------------------------------------------------ resume


def test_a_run_killed_at_3_of_6_answers_only_the_rest_and_still_counts_the_failed_sample(tmp_path, ckpt):
    tasks = _tasks(tmp_path, n=6, missing=(1,))
    table = _table(tmp_path / "t.yaml", ckpt, tasks, [{"label": "AOT 25 %", "retention": 0.25,
                                                         "compression": "aot@0.25"}])
    run_dir = tmp_path / "runs" / "aot_25pct" / "smoke"
    proc = subprocess.Popen(["bash", str(SCRIPT), str(table)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 400
    while len(_audit(run_dir)) < 3:  # three requests answered (the missing video among them)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the evaluation did not answer 3 requests in time"
        time.sleep(0.2)
    evaluation = json.loads((run_dir / mf.LOCK_NAME).read_text())["pid"]
    os.kill(evaluation, signal.SIGKILL)  # the evaluation itself, as the OOM killer would
    first, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, first[-3000:]
    assert "AOT 25 % / Smoke: exit code -9" in first
    answered = {a["doc_id"] for a in _audit(run_dir)}
    assert len(answered) >= 3 and not mf.results_files(run_dir)

    again = _run_table(table)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 finished now, 0 already finished, 0 failed" in again.stdout
    audit = _audit(run_dir)
    hits = len(answered - {1})
    assert f"ResponseCache stats: {hits} hits, {6 - hits} misses" in (run_dir / "lmms_eval.log").read_text()
    stored = [a for a in audit if a["doc_id"] != 1]
    # each answered sample ran once over both runs: the resumed run answered only the others
    assert sorted(a["doc_id"] for a in stored) == [0, 2, 3, 4, 5]
    # the failed sample was not cached as an answer: it was tried again, and failed again
    assert [a["doc_id"] for a in audit].count(1) == 2
    samples = _samples(run_dir)
    assert sorted(s["doc_id"] for s in samples) == [0, 1, 2, 3, 4, 5]
    records = {s["doc_id"]: s["token_counts"][0] for s in samples}
    assert records[1]["failed"] is True and records[1]["retention"] is None and "missing.mp4" in records[1]["error"]
    assert all(not r["failed"] and r["visual_tokens"] > 0 for d, r in records.items() if d != 1)
    cell = _cell(tmp_path / "runs")
    assert (cell["samples"], cell["failed"]) == (6, 1)
    assert cell["manifest"]["model_args"]["compression"]["spec"] == "aot@0.25"
    results = json.loads(mf.results_files(run_dir)[0].read_text())
    assert results["n-samples"]["aot_smoke_mcq"] == {"original": 6, "effective": 6}
    assert results["throughput"]["avg_samples"] == 6 and results["throughput"]["avg_failed_samples"] == 1


# ------------------------------------------------------------------------------- keyed by settings


def test_an_edited_row_is_re_run_and_its_cell_shows_the_new_run(tmp_path, ckpt):
    tasks = _tasks(tmp_path, n=4)
    row = {"label": "Pool", "retention": 0.5, "compression": "pool@0.5"}
    table = _table(tmp_path / "t.yaml", ckpt, tasks, [row], limit=2)
    runs = tmp_path / "runs"
    first = _run_table(table)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = _cell(runs)
    assert (before["samples"], before["compression"]) == (2, "pool@0.5")
    assert before["retention_mean"] == pytest.approx(0.5, abs=0.02)

    same = _run_table(table)
    assert "Pool / Smoke: finished, skipped" in same.stdout

    _table(tmp_path / "t.yaml", ckpt, tasks, [row | {"retention": 0.25, "compression": "pool@0.25"}], limit=3)
    # before the re-run, gather refuses the cell: its manifest is not the row's
    gathered = subprocess.run([sys.executable, "-m", "llava.eval.gather", str(table)], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    assert "is not shown: its settings are not the row's" in gathered.stdout
    assert _cell(runs)["score"] is None and _cell(runs)["refused"]

    second = _run_table(table)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Pool / Smoke: re-running (settings changed: limit: 2 -> 3;" in second.stdout
    assert "model_args.compression.spec: \"pool@0.5\" -> \"pool@0.25\"" in second.stdout
    after = _cell(runs)
    assert (after["samples"], after["compression"]) == (3, "pool@0.25")
    assert after["retention_mean"] == pytest.approx(0.25, abs=0.02)
    assert after["manifest"]["limit"] == 3 and not after.get("refused")
    kept = list((runs / "pool" / "smoke" / ".superseded").glob("*/why.txt"))
    assert len(kept) == 1 and "limit: 2 -> 3" in kept[0].read_text()

    # a save that failed part-way (a full disk truncates the file): not finished, re-run on the next launch
    results = mf.results_files(runs / "pool" / "smoke")[0]
    results.write_text(results.read_text()[:40])
    third = _run_table(table)
    assert third.returncode == 0, third.stdout[-3000:]
    assert "Pool / Smoke: re-running (" in third.stdout and "does not parse" in third.stdout
    assert "1 finished now, 0 already finished" in third.stdout and _cell(runs)["samples"] == 3


def test_an_edited_preset_yaml_is_a_different_run(tmp_path):
    from llava.eval.plan import plan_commands
    from llava.eval.runner import expected_manifest

    preset = tmp_path / "mine.yaml"
    preset.write_text("method: pool\nretention: 0.5\n")
    tasks = _tasks(tmp_path, n=2)
    table = _table(tmp_path / "t.yaml", tmp_path / "ckpt", tasks, [{"label": "Mine", "retention": 0.5,
                                                                     "compression": str(preset)}])
    before = expected_manifest(plan_commands(str(table))[0])
    preset.write_text("method: pool\nretention: 0.25\n")
    after = expected_manifest(plan_commands(str(table))[0])
    assert mf.manifest_key(before) != mf.manifest_key(after)
    assert any(line.startswith("model_args.compression.config.retention: 0.5 -> 0.25")
               for line in mf.diff(before, after))
    preset.write_text("method: random\nretention: 0.25\n")  # another method, the same fields
    other = expected_manifest(plan_commands(str(table))[0])
    assert mf.manifest_key(other) != mf.manifest_key(after)
    assert 'model_args.compression.method: "pool" -> "random"' in mf.diff(after, other)


# ----------------------------------------------------------------------------- checks before load


FAKE_PYTHON = """\
#!/usr/bin/env bash
# Stands in for the interpreter of the evaluations: records that one started (and its pid), then sleeps;
# anything else goes to the real interpreter.
if [[ "$1" == "-m" && "$2" == "llava.eval.lmms" ]]; then
    echo $$ >> "$FAKE_STARTED"
    sleep 120
    exit 0
fi
exec {real} "$@"
"""


def _fake_python(tmp_path: Path) -> Path:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.replace("{real}", shlex.quote(sys.executable)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


@pytest.mark.parametrize("change, expected", [
    ({"max_frames_num": 0}, "max_frames_num=0 is not valid; expected an integer >= 1"),
    ({"max_frames_num": -3}, "max_frames_num=-3 is not valid; expected an integer >= 1"),
    ({"compression": ""}, "rows[0].compression: expected a preset name, a YAML path or 'none', got ''"),
    ({"compression": "paper_ov_10pctt"}, "rows[0].compression: unknown compression"),
])
def test_configuration_errors_stop_the_table_before_any_model_loads(tmp_path, change, expected):
    tasks = _tasks(tmp_path, n=2)
    args = MODEL_ARGS | {k: v for k, v in change.items() if k != "compression"}
    row = {"label": "Row", "retention": 1.0, "compression": change.get("compression", "none")}
    table = _table(tmp_path / "t.yaml", tmp_path / "ckpt", tasks, [row], model_args=args)
    started = tmp_path / "started"
    proc = _run_table(table, PYTHON=str(_fake_python(tmp_path)), FAKE_STARTED=str(started))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr
    assert not started.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("model_args, expected", [
    ("max_frames_num=0", "max_frames_num=0 is not valid; expected an integer >= 1"),
    ("max_frames_num=-3", "max_frames_num=-3.0 is not valid; expected an integer >= 1"),  # lmms-eval parses -3.0
    ("compression=", "compression= is empty; expected 'none' for full tokens"),
    ("max_frames_num=8,compression=aot@0.001", "compression='aot@0.001' cannot run on this model's 8-frame 27x27"),
])
def test_the_plugin_refuses_impossible_settings_before_the_weights_load(tmp_path, ckpt, model_args, expected):
    """Straight through lmms-eval: the run stops before any weight is read (the checkpoint here is its
    ``config.json`` alone) and writes no results (no cell of 0.0 that a re-launch would take for finished)."""
    tasks = _tasks(tmp_path, n=2)
    bare = tmp_path / "config-only"
    bare.mkdir()
    shutil.copy(ckpt / "config.json", bare / "config.json")
    ckpt = bare
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "llava.eval.lmms", "--model", "aot_llava_onevision",
         "--model_args", f"pretrained={ckpt},torch_dtype=float32,model_name=llava_qwen,{model_args}",
         "--tasks", "aot_smoke_mcq", "--include_path", str(tasks), "--batch_size", "1", "--device", "cpu",
         "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert expected in proc.stdout + proc.stderr
    assert not mf.results_files(out)
    assert "Model Responding" not in proc.stderr


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_ok(), reason="needs unshare -rm and tmpfs mounts (user namespaces)")
@pytest.mark.parametrize("mount, expected", [
    ("mount -t tmpfs -o size=1m tmpfs \"$D\"", "MB free; expected at least 64 MB"),
    ("mount -t tmpfs -o size=8m tmpfs \"$D\" && mount -o remount,ro \"$D\"", "is not writable"),
])
def test_a_full_or_read_only_output_folder_is_refused_before_any_model_loads(tmp_path, mount, expected):
    tasks = _tasks(tmp_path, n=2)
    out = tmp_path / "mnt"
    out.mkdir()
    table = _table(tmp_path / "t.yaml", tmp_path / "ckpt", tasks,
                   [{"label": "Row", "retention": 1.0, "compression": "none"}])
    started = tmp_path / "started"
    env = _env(PYTHON=str(_fake_python(tmp_path)), FAKE_STARTED=str(started), OUTPUT_DIR=str(out), D=str(out))
    proc = subprocess.run(["unshare", "-rm", "bash", "-c", f"{mount} && exec bash {shlex.quote(str(SCRIPT))} "
                           f"{shlex.quote(str(table))}"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"output folder {out}/row/smoke" in proc.stderr and expected in proc.stderr
    assert not started.exists()


# ------------------------------------------------------------------------------ signals, one writer


def test_sigterm_stops_the_evaluation_too_and_a_second_writer_is_refused(tmp_path):
    tasks = _tasks(tmp_path, n=2)
    table = _table(tmp_path / "t.yaml", tmp_path / "ckpt", tasks,
                   [{"label": "Row", "retention": 1.0, "compression": "none"}])
    started = tmp_path / "started"
    env = _env(PYTHON=str(_fake_python(tmp_path)), FAKE_STARTED=str(started))
    proc = subprocess.Popen(["bash", str(SCRIPT), str(table)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    child = int(started.read_text().split()[0])

    second = _run_table(table, PYTHON=str(_fake_python(tmp_path)), FAKE_STARTED=str(tmp_path / "started2"))
    assert second.returncode == 2
    assert f"{tmp_path / 'runs'} is being written by" in second.stderr and f'"pid": {proc.pid}' in second.stderr
    assert not (tmp_path / "started2").exists()

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "stopped by signal 15" in out and "Stopped by SIGTERM" in out
    with pytest.raises(ProcessLookupError):  # the evaluation did not outlive the runner
        for _ in range(50):
            os.kill(child, 0)
            time.sleep(0.1)


def test_an_evaluation_refuses_a_folder_another_one_is_writing(tmp_path):
    out = tmp_path / "out"
    with mf.locked(out, what="the first evaluation"):
        proc = subprocess.run([sys.executable, "-m", "llava.eval.lmms", "--model", "aot_llava_onevision",
                               "--tasks", "aot_smoke_mcq", "--output_path", str(out)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{out} is being written by" in proc.stderr and "the first evaluation" in proc.stderr


# --------------------------------------------------------------------------------- report, loaders


def test_report_refuses_a_folder_two_runs_wrote_into(tmp_path, ckpt):
    """Two runs started in the same second share lmms-eval's timestamp: one results file, both runs'
    samples in one file. ``aot report`` refuses it instead of averaging two compressions."""
    tasks = _tasks(tmp_path, n=2)
    outs = []
    for compression in ("none", "pool@0.25"):
        out = tmp_path / compression.replace("@", "_")
        proc = subprocess.run(
            [sys.executable, "-m", "llava.eval.lmms", "--model", "aot_llava_onevision",
             "--model_args", f"pretrained={ckpt},max_frames_num=8,torch_dtype=float32,model_name=llava_qwen,"
                             f"compression={compression}",
             "--tasks", "aot_smoke_mcq", "--include_path", str(tasks), "--batch_size", "1", "--device", "cpu",
             "--output_path", str(out), "--log_samples"], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(out)
    results = mf.results_files(outs[1])[0]
    samples = results.with_name(results.name.replace("_results.json", "_samples_aot_smoke_mcq.jsonl"))
    first = mf.results_files(outs[0])[0]
    other = first.with_name(first.name.replace("_results.json", "_samples_aot_smoke_mcq.jsonl"))
    samples.write_text(other.read_text() + samples.read_text())
    proc = subprocess.run([sys.executable, "-m", "llava.cli", "report", str(outs[1])], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0
    assert "repeat doc ids ['0', '1']" in proc.stderr and "expected one run per folder" in proc.stderr


def test_a_task_loader_that_calls_sys_exit_fails_one_sample(tmp_path, ckpt):
    """lmms-eval's own Charades-STA loader calls ``sys.exit`` when a video is missing; here a task whose
    ``doc_to_visual`` does the same for one document."""
    tasks = _tasks(tmp_path, n=3)
    utils = tasks / "aot_smoke" / "utils.py"
    utils.write_text(utils.read_text() + (
        "\n\n_doc_to_visual = doc_to_visual\n\n\ndef doc_to_visual(doc):\n"
        "    if doc['id'] == 'red_right_direction':\n        import sys\n        sys.exit(f\"video not found\")\n"
        "    return _doc_to_visual(doc)\n"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "aot_llava_onevision",
         "--model_args", f"pretrained={ckpt},max_frames_num=8,torch_dtype=float32,model_name=llava_qwen",
         "--tasks", "aot_smoke_mcq", "--include_path", str(tasks), "--batch_size", "1", "--device", "cpu",
         "--output_path", str(out), "--log_samples"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {s["doc_id"]: s["token_counts"][0] for s in _samples(out)}
    assert sorted(records) == [0, 1, 2]
    assert records[1]["failed"] and records[1]["retention"] is None
    assert "doc_to_visual failed: SystemExit: video not found" in records[1]["error"]
    assert not records[0]["failed"] and records[0]["retention"] == 1.0
