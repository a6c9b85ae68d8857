"""Paper-table configs (configs/eval/*.yaml), their validation, the lmms-eval plan and the launch scripts."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import visionzip as vz
from llava.eval import plan as plan_mod
from llava.eval.plan import plan_commands
from llava.eval.tables import TableError, list_tables, load_table, slugify, tables_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "eval"
OV_ARGS = ("pretrained=lmms-lab/llava-onevision-qwen2-7b-ov,conv_template=qwen_1_5,model_name=llava_qwen,"
           "max_frames_num=32")


# ------------------------------------------------------------------------------------------- configs


def test_tables_listed():
    assert {"llava_ov_7b", "llava_video_7b", "smoke_tiny"} <= set(list_tables())
    assert tables_dir() == ROOT / "configs" / "eval"


@pytest.mark.parametrize("name", list_tables())
def test_every_table_loads(name):
    table = load_table(name)
    assert table.name == name
    assert load_table(tables_dir() / f"{name}.yaml") == table
    text = (tables_dir() / f"{name}.yaml").read_text()
    assert text.startswith("#"), "every table opens with a comment saying what it reproduces"
    header = text.split("\nname:")[0]
    assert "bash scripts/eval/" in header, "the opening comment gives the command that launches the table"
    for row in table.rows:
        for column in table.columns:
            vz.load_config(row.compression_for(column.label))   # every compression resolves


def test_ov_table_matches_the_paper():
    table = load_table("llava_ov_7b")
    assert [c.label for c in table.columns] == ["MVBench", "EgoSchema", "LongVideoBench", "VideoMME"]
    assert [(c.task, c.metric, c.scale) for c in table.columns] == [
        ("mvbench", "mvbench_accuracy,none", "percent"),
        ("egoschema_subset", "score,none", "fraction"),
        ("longvideobench_val_v", "lvb_acc,none", "fraction"),
        ("videomme", "videomme_perception_score,none", "percent"),
    ]
    assert table.columns[0].aggregate == "subtask_mean"
    assert [r.label for r in table.rows] == ["Full tokens", "AOT 25 %", "AOT 20 %", "AOT 15 %", "AOT 10 %"]
    full, *_, ten = table.rows
    assert dict(full.paper) == {"MVBench": 58.3, "EgoSchema": 60.4, "LongVideoBench": 56.4, "VideoMME": 58.6}
    assert dict(ten.paper) == {"MVBench": 57.0, "EgoSchema": 60.6, "LongVideoBench": 54.2, "VideoMME": 56.1}
    assert all(not r.paper for r in table.rows[1:4]), "the paper's numbers are known only for full tokens and 10 %"
    assert [ten.compression_for(c.label) for c in table.columns] == [
        "paper_ov_10pct", "paper_ov_10pct", "paper_ov_10pct_long", "paper_ov_10pct_long"]


def test_tiny_model_shape_matches_the_checkpoint():
    from llava.fixtures.tiny_checkpoint import tiny_config

    cfg = tiny_config(100)
    shape = load_table("smoke_tiny").model_shape
    assert (shape.layers, shape.hidden, shape.ffn) == (cfg["num_hidden_layers"], cfg["hidden_size"],
                                                       cfg["intermediate_size"])
    grid = cfg["vision_config"]["image_size"] // cfg["vision_config"]["patch_size"]
    h, w = vz.pooled_grid((grid, grid), mode="bilinear", stride=cfg["mm_spatial_pool_stride"])
    assert shape.tokens_per_frame == h * w


def test_slugify():
    assert slugify("AOT 10 %") == "aot_10pct"
    assert slugify("Full tokens") == "full_tokens"
    assert slugify("LongVideoBench") == "longvideobench"


# ---------------------------------------------------------------------------------------- validation

BASE = {
    "name": "t",
    "title": "T",
    "model": "aot_llava_onevision",
    "model_args": {"pretrained": "x/y", "max_frames_num": 32},
    "launcher": "accelerate",
    "output_dir": "runs/t",
    "model_shape": {"layers": 2, "hidden": 64, "ffn": 128, "tokens_per_frame": 196},
    "columns": [{"label": "A", "task": "a", "metric": "acc,none", "scale": "fraction"},
                {"label": "B", "task": "b", "metric": "acc,none", "scale": "percent"}],
    "rows": [{"label": "Full", "retention": 1.0, "compression": "none"}],
}


def _write(tmp_path: Path, **changes) -> Path:
    data = {**BASE, **changes}
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text("# test table\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def test_valid_base(tmp_path):
    table = load_table(_write(tmp_path))
    assert table.batch_size == 1 and table.lmms_args == ()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"launcher": "slurm"}, ["launcher", "'slurm'", "accelerate", "python"]),
    ({"rows": [{"label": "X", "retention": 0.1, "compression": "ov_99pct"}]},
     ["rows[0].compression", "'ov_99pct'", "paper_ov_10pct", "ov_25pct"]),
    ({"rows": [{"label": "X", "retention": 0.1, "compression": {"default": "ov_25pct", "C": "ov_15pct"}}]},
     ["rows[0].compression", "['C']", "'A'", "'B'"]),
    ({"rows": [{"label": "X", "retention": 0.1, "compression": {"A": "ov_25pct"}}]},
     ["rows[0].compression", "no 'default'", "['B']"]),
    ({"rows": [{"label": "X", "retention": 0.1, "compression": "none"},
               {"label": "X", "retention": 0.2, "compression": "none"}]},
     ["rows", "duplicate", "'X'"]),
    ({"columns": [{"label": "A", "task": "a", "metric": "m", "scale": "fraction"},
                  {"label": "a", "task": "b", "metric": "m", "scale": "fraction"}]}, ["columns", "duplicate", "slug"]),
    ({"columns": [{"label": "A", "task": "a", "metric": "m", "scale": "ratio"}]},
     ["columns[0].scale", "'ratio'", "fraction"]),
    ({"columns": [{"label": "A", "task": "a", "metric": "m", "scale": "fraction", "weight": 2}]},
     ["columns[0]", "['weight']"]),
    ({"rows": [{"label": "X", "retention": 1.5, "compression": "none"}]}, ["rows[0].retention", "1.5", "(0, 1]"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"C": 50.0}}]},
     ["rows[0].paper", "'C'"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"A": 0.5, "B": 150}}]},
     ["rows[0].paper.B", "150"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "source": "Some report, Table 1"}]},
     ["rows[0].source", "no 'paper' figures"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"A": 50.0}, "source": {"C": "R"}}]},
     ["rows[0].source.C", "neither a column nor a run", "'A'"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"A": 50.0, "B": 40.0},
                "source": {"A": "Some report, Table 1"}}]}, ["rows[0].source", "['B']", "names its source"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"A": 50.0},
                "source": {"A": "R", "B": "R"}}]}, ["rows[0].source.B", "covers no column with a 'paper' figure"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"A": 50.0}, "source": "two\nlines"}]},
     ["rows[0].source", "one-line string"]),
    ({"rows": [{"label": "X", "retention": 1.0, "compression": "none", "paper": {"A": 50.0}, "source": ["R"]}]},
     ["rows[0].source", "mapping column or run"]),
    ({"columns": [{"label": "A", "task": "a", "metric": "CIDEr,none", "scale": "unbounded"}],
      "reference": {"folder": "logs/", "columns": {"A": "a"}, "rows": {}}},
     ["reference.columns.A", "'unbounded' column has no release log"]),
    ({"name": "other"}, None),
    ({"lmms_args": {"output_path": "x"}}, ["lmms_args.output_path", "set by the plan"]),
    ({"model_args": {"pretrained": "x", "compression": "ov_25pct"}}, ["model_args.compression", "per row"]),
    ({"model_args": {"pretrained": "a,b"}}, ["model_args.pretrained", "','"]),
    ({"batch_size": 0}, ["batch_size", "positive integer"]),
    ({"model_shape": {"layers": 2, "hidden": 64, "ffn": 128}}, ["model_shape", "['tokens_per_frame']"]),
    ({"colums": []}, ["top level", "['colums']"]),
    ({"average": "no"}, ["average", "'no' is not valid; expected true or false"]),
])
def test_validation_errors_name_file_field_and_expectation(tmp_path, changes, expected):
    if "name" in changes:   # the name must match the file name
        path = _write(tmp_path)
        path.write_text(path.read_text().replace("name: t\n", "name: other\n"))
        expected = ["name", "'other'", "'t'"]
    else:
        path = _write(tmp_path, **changes)
    with pytest.raises(TableError) as err:
        load_table(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_a_source_covers_a_run_or_a_column_and_unbounded_scores_pass_100(tmp_path):
    columns = [{"label": "C CIDEr", "task": "c", "metric": "CIDEr,none", "scale": "unbounded", "run": "C"},
               {"label": "C BLEU-4", "task": "c", "metric": "Bleu_4,none", "scale": "fraction", "run": "C"},
               {"label": "D", "task": "d", "metric": "acc,none", "scale": "percent"}]
    rows = [{"label": "Full", "retention": 1.0, "compression": "none",
             "paper": {"C CIDEr": 131.5, "C BLEU-4": 9.0, "D": 50.0}, "source": {"C": "Report A, Table 2", "D": "B"}}]
    row = load_table(_write(tmp_path, columns=columns, rows=rows)).rows[0]
    assert row.sources == (("C CIDEr", "Report A, Table 2"), ("C BLEU-4", "Report A, Table 2"), ("D", "B"))
    assert row.paper_source("D") == "B" and row.paper_score("C CIDEr") == 131.5
    rows[0]["paper"]["C BLEU-4"] = 131.5
    with pytest.raises(TableError, match=r"rows\[0\]\.paper\.C BLEU-4: expected a score in percent \(0-100\)"):
        load_table(_write(tmp_path, columns=columns, rows=rows))
    rows[0]["paper"]["C BLEU-4"], rows[0]["paper"]["C CIDEr"] = 9.0, -1.0
    with pytest.raises(TableError, match=r"rows\[0\]\.paper\.C CIDEr: expected a score in percent \(0 or more\)"):
        load_table(_write(tmp_path, columns=columns, rows=rows))


def test_compression_yaml_path_accepted(tmp_path):
    rows = [{"label": "Y", "retention": 0.25, "compression": "configs/compression/ov_25pct.yaml"}]
    table = load_table(_write(tmp_path, rows=rows))
    assert table.rows[0].compression == "configs/compression/ov_25pct.yaml"
    with pytest.raises(TableError, match=r"rows\[0\].compression.*does not exist"):
        load_table(_write(tmp_path, rows=[{"label": "Y", "retention": 0.25, "compression": "nowhere/x.yaml"}]))


def test_unknown_table_lists_the_tables():
    with pytest.raises(ValueError, match="llava_ov_7b"):
        load_table("llava_ov_8b")
    with pytest.raises(ValueError, match="does not exist"):
        load_table("nowhere/table.yaml")


# ---------------------------------------------------------------------------------------------- plan


def test_plan_ov_table():
    runs = plan_commands("llava_ov_7b")
    assert len(runs) == 20
    assert [(r.row, r.column) for r in runs[:5]] == [
        ("Full tokens", "MVBench"), ("Full tokens", "EgoSchema"), ("Full tokens", "LongVideoBench"),
        ("Full tokens", "VideoMME"), ("AOT 25 %", "MVBench")]
    assert len({r.output_path for r in runs}) == 20
    run = next(r for r in runs if (r.row, r.column) == ("AOT 10 %", "VideoMME"))
    assert list(run.argv) == [
        "$PYTHON", "-m", "accelerate.commands.launch", "--num_processes", "$NUM_GPUS",
        "--main_process_port", "${MAIN_PORT:-29500}", "-m", "llava.eval.lmms",
        "--model", "aot_llava_onevision",
        "--model_args", OV_ARGS + ",compression=paper_ov_10pct_long",
        "--tasks", "videomme", "--batch_size", "1",
        "--output_path", "runs/eval/llava_ov_7b/aot_10pct/videomme", "--log_samples",
    ]
    ten = {r.column: r.compression for r in runs if r.row == "AOT 10 %"}
    assert ten == {"MVBench": "paper_ov_10pct", "EgoSchema": "paper_ov_10pct",
                   "LongVideoBench": "paper_ov_10pct_long", "VideoMME": "paper_ov_10pct_long"}
    for r in runs:
        assert f"compression={r.compression}" in r.argv[r.argv.index("--model_args") + 1]
    assert {r.compression for r in runs if r.row == "AOT 25 %"} == {"ov_25pct"}
    assert {r.compression for r in runs if r.row == "Full tokens"} == {"none"}


def test_plan_shell_line_quotes_and_keeps_variables():
    run = plan_commands("llava_ov_7b", rows=["AOT 10 %"], columns=["MVBench"], output_dir="/tmp/my runs")[0]
    line = run.shell()
    assert line.startswith('"$PYTHON" -m accelerate.commands.launch --num_processes "$NUM_GPUS" '
                           '--main_process_port "${MAIN_PORT:-29500}" -m llava.eval.lmms ')
    assert "'/tmp/my runs/aot_10pct/mvbench'" in line
    assert shlex.split(line) == list(run.argv)
    expanded = run.expand({"PYTHON": "/usr/bin/python3", "NUM_GPUS": "4"})
    assert expanded[:7] == ["/usr/bin/python3", "-m", "accelerate.commands.launch", "--num_processes", "4",
                            "--main_process_port", "29500"]
    with pytest.raises(ValueError, match="NUM_GPUS"):
        run.expand({"PYTHON": "python"})


def test_plan_selection_and_smoke_table():
    runs = plan_commands("llava_ov_7b", rows=["aot_10pct", "Full tokens"], columns=["VideoMME"])
    assert [(r.row, r.column) for r in runs] == [("Full tokens", "VideoMME"), ("AOT 10 %", "VideoMME")]
    with pytest.raises(ValueError, match="unknown column 'MLVU'.*MVBench"):
        plan_commands("llava_ov_7b", columns=["MLVU"])
    smoke = plan_commands("smoke_tiny")
    assert [r.compression for r in smoke] == ["none", "paper_ov_10pct"]
    assert list(smoke[1].argv) == [
        "$PYTHON", "-m", "llava.eval.lmms", "--model", "aot_llava_onevision",
        "--model_args", "pretrained=runs/smoke/tiny-llava-ov,max_frames_num=32,torch_dtype=float32,"
                        "conv_template=qwen_1_5,model_name=llava_qwen,compression=paper_ov_10pct",
        "--tasks", "aot_smoke_mcq", "--batch_size", "2", "--device", "cpu", "--limit", "4",
        "--include_path", "lmms_eval_tasks", "--output_path", "runs/smoke/aot_10pct/smoke", "--log_samples",
    ]


def test_plan_video_table_model_args():
    runs = plan_commands("llava_video_7b")
    assert len(runs) == 16  # full tokens, the release's k180, 25 %, 15 %
    args = runs[0].argv[runs[0].argv.index("--model_args") + 1]
    assert args == ("pretrained=lmms-lab/LLaVA-Video-7B-Qwen2,conv_template=qwen_1_5,max_frames_num=64,"
                    "mm_spatial_pool_mode=average,mm_newline_position=grid,force_sample=True,"
                    "add_time_instruction=True,compression=none")


def test_plan_cli(capsys):
    assert plan_mod.main(["llava_ov_7b", "--rows", "AOT 10 %,Full tokens", "--columns", "MVBench"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith('"$PYTHON" -m accelerate.commands.launch') for line in lines)
    assert plan_mod.main(["smoke_tiny", "--format", "tsv"]) == 0
    row, column, out, command = capsys.readouterr().out.splitlines()[0].split("\t")
    assert (row, column, out) == ("Full tokens", "Smoke", "runs/smoke/full_tokens/smoke")
    assert command.startswith('"$PYTHON" -m llava.eval.lmms ')
    assert plan_mod.main(["smoke_tiny", "--rows", "nope"]) == 2
    assert "unknown row 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- scripts


def _script(name: str, tmp_path: Path | None = None, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("ROWS", "COLUMNS", "FORCE", "DRY_RUN", "OUTPUT_DIR")}
    full_env.setdefault("PYTHON", sys.executable)
    full_env.update(env)
    return subprocess.run(["bash", str(SCRIPTS / name)], env=full_env, capture_output=True, text=True,
                          cwd=tmp_path or ROOT, timeout=300)


def _commands(stdout: str, cache: bool = False) -> list[list[str]]:
    """The commands a dry run printed; without the ``--use_cache <run>/.cache/<key>`` the runner appends
    (checked here) unless ``cache``."""
    commands = [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]
    if cache:
        return commands
    for c in commands:
        assert c[-2] == "--use_cache" and re.fullmatch(re.escape(c[c.index("--output_path") + 1]) +
                                                        r"/\.cache/[0-9a-f]{16}", c[-1]), c
    return [c[:-2] for c in commands]


@pytest.mark.parametrize("name", ["_run_table.sh", "llava_ov_7b.sh", "llava_video_7b.sh", "qwen2_5_vl_7b.sh",
                                  "qwen3_vl_8b.sh", "smoke.sh", "llava_ov_7b_generative.sh",
                                  "llava_video_7b_generative.sh", "qwen2_5_vl_7b_generative.sh",
                                  "qwen3_vl_8b_generative.sh"])
def test_scripts_open_with_their_commands(name):
    text = (SCRIPTS / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n#")
    assert "set -euo pipefail" in text
    if name != "_run_table.sh":
        assert "DRY_RUN=1" in text and "llava.eval.gather" in text


def test_dry_run_prints_the_planned_commands(tmp_path):
    proc = _script("llava_ov_7b.sh", tmp_path, DRY_RUN="1", NUM_GPUS="8", PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    expected = [r.expand({"PYTHON": sys.executable, "NUM_GPUS": "8"}) for r in plan_commands("llava_ov_7b")]
    assert commands == expected
    assert commands[0][:5] == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "8"]
    assert proc.stdout.splitlines()[0] == "# [1/20] Full tokens / MVBench"


def test_dry_run_selection_and_default_interpreter():
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(DRY_RUN="1", NUM_GPUS="2", ROWS="AOT 10 %", COLUMNS="LongVideoBench,VideoMME", MAIN_PORT="29611")
    proc = subprocess.run(["bash", str(SCRIPTS / "llava_ov_7b.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    assert len(commands) == 2
    assert commands[0][:7] == [".venv/bin/python", "-m", "accelerate.commands.launch", "--num_processes", "2",
                               "--main_process_port", "29611"]
    assert all("compression=paper_ov_10pct_long" in c[c.index("--model_args") + 1] for c in commands)


def _finished_run(run, subtasks: list[str], n: int = 2) -> None:
    """Write what a finished lmms-eval run of ``run`` (a group task of ``subtasks``) leaves: its manifest,
    a results file counting ``n`` samples per subtask and the logged samples."""
    from llava.eval import manifest as mf
    from llava.eval.runner import expected_manifest

    out = Path(run.output_path)
    mf.write_manifest(out, expected_manifest(run), row=run.row, column=run.column)
    folder = out / "lmms-lab__llava-onevision-qwen2-7b-ov"
    folder.mkdir(parents=True)
    group = run.argv[run.argv.index("--tasks") + 1]
    results = {"results": {group: {"acc,none": 0.5}, **{t: {"acc,none": 0.5} for t in subtasks}},
               "group_subtasks": {group: subtasks},
               "n-samples": {t: {"original": 10, "effective": n} for t in subtasks},
               "config": {"model": "aot_llava_onevision", "limit": n}}
    (folder / "20260101_120000_results.json").write_text(json.dumps(results))
    for t in subtasks:
        (folder / f"20260101_120000_samples_{t}.jsonl").write_text("".join(
            json.dumps({"doc_id": i, "token_counts": []}) + "\n" for i in range(n)))


def test_finished_runs_are_skipped_unless_forced(tmp_path):
    out = tmp_path / "runs"
    runs = plan_commands("llava_ov_7b", ["AOT 10 %"], ["MVBench", "EgoSchema"], output_dir=out)
    # a finished run needs its limit in the manifest: the table has none, so n == the task's size
    _finished_run(runs[0], ["mvbench_action_sequence", "mvbench_object_shuffle"], n=10)
    bad = Path(runs[1].output_path) / "model"                # a results file that does not parse
    bad.mkdir(parents=True)
    (bad / "20260101_120000_results.json").write_text("{")
    (out / "full_tokens" / "mvbench").mkdir(parents=True)   # a folder without results is not finished
    proc = _script("llava_ov_7b.sh", DRY_RUN="1", NUM_GPUS="8", OUTPUT_DIR=str(out))
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    assert len(commands) == 19
    assert all(c[c.index("--output_path") + 1].startswith(str(out)) for c in commands)
    assert str(out / "aot_10pct" / "mvbench") not in [c[c.index("--output_path") + 1] for c in commands]
    assert "AOT 10 % / MVBench: finished, skipped" in proc.stdout
    assert "AOT 10 % / EgoSchema (re-run: no manifest (aot_run.json) beside the results" in proc.stdout
    forced = _script("llava_ov_7b.sh", DRY_RUN="1", NUM_GPUS="8", OUTPUT_DIR=str(out), FORCE="1")
    assert len(_commands(forced.stdout)) == 20


def test_a_run_whose_results_miss_samples_is_not_finished(tmp_path):
    from llava.eval import manifest as mf
    from llava.eval.runner import expected_manifest

    run = plan_commands("llava_ov_7b", ["AOT 10 %"], ["MVBench"], output_dir=tmp_path)[0]
    _finished_run(run, ["mvbench_action_sequence", "mvbench_object_shuffle"], n=4)   # a --limit 4 smoke run
    verdict = mf.check_finished(run.output_path, expected_manifest(run))
    assert not verdict.finished and "counts 4 samples of mvbench_action_sequence; expected 10" in verdict.why


FAKE_PYTHON = """\
#!/usr/bin/env bash
# Stands in for the interpreter: lmms-eval runs are faked (a run with compression=paper_ov_10pct fails as
# lmms-eval 0.7.3 fails: the traceback logged, exit code $FAKE_EXIT, by default 0), anything else goes to the
# real interpreter.
if [[ "$1" == "-m" && "$2" == "llava.eval.lmms" ]]; then
    args="$*"
    out=""
    while [[ $# -gt 0 ]]; do [[ "$1" == "--output_path" ]] && out="$2"; shift; done
    echo "fake lmms_eval $args"
    if [[ "$args" == *compression=paper_ov_10pct* ]]; then
        echo "2026-12-01 | ERROR | lmms_eval.__main__:cli_evaluate:400 - Error during evaluation" >&2
        echo "Traceback (most recent call last):" >&2
        echo "  File \"x.py\", line 1, in <module>" >&2
        echo "ModuleNotFoundError: No module named 'filelock._api'" >&2
        exit "${FAKE_EXIT:-0}"
    fi
    mkdir -p "$out/model"
    echo '{"results": {"aot_smoke_mcq": {"acc,none": 0.5}}, "n-samples": {"aot_smoke_mcq": {"original": 8,
          "effective": 4}}, "config": {"model": "aot_llava_onevision"}}' > "$out/model/20260101_120000_results.json"
    for i in 0 1 2 3; do echo '{"doc_id": '$i'}'; done > "$out/model/20260101_120000_samples_aot_smoke_mcq.jsonl"
    exit 0
fi
exec {real} "$@"
"""


def _fake_python(tmp_path) -> Path:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.replace("{real}", shlex.quote(sys.executable)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


@pytest.mark.parametrize("exit_code", ["0", "3"])
def test_a_failed_run_does_not_stop_the_table(tmp_path, exit_code):
    fake = _fake_python(tmp_path)
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHON": str(fake), "OUTPUT_DIR": str(out), "FAKE_EXIT": exit_code}
    proc = subprocess.run(["bash", str(SCRIPTS / "_run_table.sh"), "smoke_tiny"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 finished now, 0 already finished, 1 failed" in proc.stdout
    why = "exited 0 but no results file" if exit_code == "0" else "exit code 3"
    log = out / "aot_10pct" / "smoke" / "lmms_eval.log"
    assert f"AOT 10 % / Smoke: {why} (log: {log})" in proc.stdout
    # the first error line of the failed run's log, beside its path, after the table of what finished
    assert "ModuleNotFoundError: No module named 'filelock._api'" in proc.stdout.split(f"(log: {log})")[1]
    assert proc.stdout.index("| Full tokens |") < proc.stdout.index("1 failed")
    assert (out / "full_tokens" / "smoke" / "model" / "20260101_120000_results.json").is_file()
    assert "Error during evaluation" in log.read_text()
    again = subprocess.run(["bash", str(SCRIPTS / "_run_table.sh"), "smoke_tiny"], capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 1
    assert "Full tokens / Smoke: finished, skipped" in again.stdout
    assert "0 finished now, 1 already finished, 1 failed" in again.stdout


def test_smoke_dry_run_writes_nothing(tmp_path):
    """The smoke evaluation covers the three task families: QA, grounding and captioning, each its own table."""
    out = tmp_path / "smoke"
    proc = _script("smoke.sh", DRY_RUN="1", OUTPUT_DIR=str(out))
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    expected = [r.expand({"PYTHON": sys.executable})
                for name, folder in (("smoke_tiny", out), ("smoke_tiny_grounding", out / "grounding"),
                                     ("smoke_tiny_caption", out / "caption"))
                for r in plan_commands(name, output_dir=folder)]
    assert commands == expected
    assert [c[c.index("--output_path") + 1] for c in commands[:2]] == [
        str(out / "full_tokens" / "smoke"), str(out / "aot_10pct" / "smoke")]
    assert [c[c.index("--tasks") + 1] for c in commands] == [
        "aot_smoke_mcq"] * 2 + ["aot_smoke_grounding"] * 2 + ["aot_smoke_caption"] * 2
    assert [c[c.index("--model_args") + 1].rsplit("compression=", 1)[1] for c in commands] == [
        "none", "paper_ov_10pct"] * 3
    assert commands[0][:3] == [sys.executable, "-m", "llava.eval.lmms"]
    assert not out.exists()
    text = (SCRIPTS / "smoke.sh").read_text()
    assert '-m llava.cli tiny-checkpoint "$checkpoint"' in text and "checkpoint=runs/smoke/tiny-llava-ov" in text


def test_unknown_task_fails_before_any_run(tmp_path):
    table = yaml.safe_load((ROOT / "configs" / "eval" / "smoke_tiny.yaml").read_text())
    table["columns"][0]["task"] = "aot_smoke_mcqq"
    path = tmp_path / "smoke_tiny.yaml"
    path.write_text(yaml.safe_dump(table))
    fake = _fake_python(tmp_path)
    env = {**os.environ, "PYTHON": str(fake), "OUTPUT_DIR": str(tmp_path / "runs")}
    proc = subprocess.run(["bash", str(SCRIPTS / "_run_table.sh"), str(path)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode != 0
    assert "unknown lmms-eval task(s): 'aot_smoke_mcqq' (close: ['aot_smoke_mcq'" in proc.stderr
    assert "fake lmms_eval" not in proc.stdout and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name,videomme", [("qwen2_5_vl_7b", "videomme"), ("qwen3_vl_8b", "aot_videomme")])
def test_qwen_table_model_args_are_the_plugins_and_its_presets_are_aot_at_the_row_retention(name, videomme):
    from lmms_eval.models import get_model

    table = load_table(name)
    plugin = get_model(table.model)
    assert table.frames() == 32
    plugin.check_model_args(dict(table.model_args))  # every key is one the plugin accepts
    assert [c.task for c in table.columns] == ["mvbench", "longvideobench_val_v", videomme, "mlvu_dev"]
    for row in table.rows[1:]:
        assert vz.load_config(row.compression) == vz.load_config(f"aot@{row.retention}")


@pytest.mark.parametrize("builtin", ["qwen2_5_vl", "qwen3_vl"])
def test_the_qwen_tables_tasks_have_no_prompt_variant_of_the_builtin(builtin):
    """lmms-eval picks a task's prompt variant by the --model name: where a task has no entry for the
    built-in, the built-in and the plugin both get ``default`` (docs/reproduce.md). VideoMME has one for
    qwen3_vl, which ``aot_videomme`` gives aot_qwen3_vl (tests/test_aot_tasks.py). Fails if an lmms-eval
    release adds another, which the plugin would then have to follow."""
    import re

    import lmms_eval

    tasks_dir = Path(lmms_eval.__file__).parent / "tasks"
    folders = ("mvbench", "longvideobench", "mlvu") + (("videomme",) if builtin == "qwen2_5_vl" else ())
    for folder in folders:
        for path in sorted((tasks_dir / folder).iterdir()):
            if path.suffix == ".yaml" or path.name.endswith("_yaml"):
                assert not re.search(rf"^\s+{builtin}\s*:", path.read_text(), re.M), path


GENERATIVE = {  # table -> the QA table whose model arguments it shares
    "llava_ov_7b_generative": "llava_ov_7b", "llava_video_7b_generative": "llava_video_7b",
    "qwen2_5_vl_7b_generative": "qwen2_5_vl_7b", "qwen3_vl_8b_generative": "qwen3_vl_8b"}
GROUNDING = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")
CAPTIONING = ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")
#: each benchmark run of a generative table: its lmms-eval task and the metric names of its columns
BENCHMARKS = {"Charades-STA": ("temporal_grounding_charades", GROUNDING),
              "Charades-TimeLens": ("timelens_charades", GROUNDING),
              "ActivityNet-TimeLens": ("timelens_activitynet", GROUNDING),
              "QVHighlights-TimeLens": ("timelens_qvhighlights", GROUNDING),
              "YouCook2": ("youcook2_val", CAPTIONING), "VATEX": ("vatex_test", CAPTIONING)}


def _finished_generative_run(run, table, metrics: dict[str, float]) -> None:
    """What a finished lmms-eval run of ``run`` leaves (two documents): manifest, results, samples."""
    from llava.eval import manifest as mf
    from llava.eval.runner import expected_manifest

    out = Path(run.output_path)
    mf.write_manifest(out, expected_manifest(run), row=run.row, column=run.column)
    task = run.argv[run.argv.index("--tasks") + 1]
    folder = out / "model"
    folder.mkdir(parents=True)
    (folder / "20260101_120000_results.json").write_text(json.dumps({
        "results": {task: metrics}, "n-samples": {task: {"original": 2, "effective": 2}},
        "config": {"model": table.model}}))
    (folder / f"20260101_120000_samples_{task}.jsonl").write_text(
        "".join(json.dumps({"doc_id": i, "token_counts": []}) + "\n" for i in range(2)))


@pytest.mark.parametrize("name", list(GENERATIVE))
def test_generative_tables_share_one_run_per_benchmark_and_gather_every_metric(tmp_path, name):
    from llava.eval.gather import gather, render_markdown

    table = load_table(name)
    runs = plan_commands(name, output_dir=tmp_path)
    # 19 rows (full, AOT and five baselines at 25 / 15 / 10 %) x one run per benchmark, not per metric column
    assert len(table.rows) == 19 and len(table.columns) == 24 and len(runs) == 19 * 6
    assert [r.column for r in runs[:6]] == list(BENCHMARKS)
    assert {r.column: r.columns for r in runs[:6]} == {
        bench: tuple(f"{bench} {metric}" for metric in metrics) for bench, (_, metrics) in BENCHMARKS.items()}
    assert {r.column: r.argv[r.argv.index("--tasks") + 1] for r in runs[:6]} == {
        bench: task for bench, (task, _) in BENCHMARKS.items()}
    assert [r.row for r in runs[::6]] == [row.label for row in table.rows]
    specs = [r.compression for r in runs[::6]]
    assert [s for s in specs[4:]] == [f"{m}@{p}" for m in ("fastvid", "visionzip", "dycoke", "pool", "random")
                                      for p in ("0.25", "0.15", "0.1")]
    assert specs[0] == "none" and [r.retention for r in table.rows[1:4]] == [0.25, 0.15, 0.10]
    # the script's dry run prints the command of every row and benchmark run: 19 x 6
    proc = _script(f"{name}.sh", tmp_path, DRY_RUN="1", NUM_GPUS="8", PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stderr
    assert _commands(proc.stdout) == [r.expand({"PYTHON": sys.executable, "NUM_GPUS": "8"})
                                      for r in plan_commands(name)]
    headings = [line for line in proc.stdout.splitlines() if line.startswith("# [")]
    assert len(headings) == 114 and headings[-1] == "# [114/114] Random 10 % / VATEX"
    assert headings[:6] == [f"# [{i}/114] Full tokens / {bench}" for i, bench in enumerate(BENCHMARKS, 1)]
    # finished Charades-STA and VATEX runs of the first row: every column of each reads its metric from it
    grounding = {"charades_sta_IOU@3,none": 41.0, "charades_sta_IOU@5,none": 27.5, "charades_sta_IOU@7,none": 12.25,
                 "charades_sta_mIOU,none": 28.0}
    captions = {"vatex_CIDEr,none": 1.25, "vatex_Bleu_4,none": 0.125, "vatex_METEOR,none": 0.5,
                "vatex_ROUGE_L,none": 0.375}   # pycocoevalcap's own scale: CIDEr above 1 is no error
    _finished_generative_run(runs[0], table, grounding)
    _finished_generative_run(runs[5], table, captions)
    data = gather(table, tmp_path)
    cells = data["rows"][0]["cells"]
    assert [cells[f"Charades-STA {m}"]["score"] for m in GROUNDING] == list(grounding.values())
    assert [cells[f"VATEX {m}"]["score"] for m in CAPTIONING] == [125.0, 12.5, 50.0, 37.5]
    assert {cells[c]["run_dir"] for c in ("Charades-STA R1@0.3", "Charades-STA mIoU")} == {runs[0].output_path}
    assert cells["YouCook2 CIDEr"]["score"] is None  # its own run has not run
    assert data["problems"] == [] and len(data["missing"]) == 19 * 24 - 8
    # the rendered header names every column by its benchmark and the benchmark's metric name; IoU beside
    # caption scores has no meaningful average, so there is no Avg
    assert table.average is False and data["rows"][0]["avg"] is None and data["average"] is False
    rendered = render_markdown(data)
    header = rendered.splitlines()[2]
    labels = [f"{bench} {metric}" for bench, (_, metrics) in BENCHMARKS.items() for metric in metrics]
    assert header == "| " + " | ".join(["Method", *labels, "Retention", "TFLOPs", "Failed"]) + " |"
    assert "no Avg: the columns measure different things" in rendered
    first = next(line for line in render_markdown(data).splitlines() if line.startswith("| Full tokens |"))
    assert first.startswith("| Full tokens | 41.0 | 27.5 | 12.2 | 28.0 | — |")
    assert "| 125.0 | 12.5 | 50.0 | 37.5 |" in first


@pytest.mark.parametrize("name", list(GENERATIVE))
def test_generative_columns_read_metrics_lmms_eval_defines_and_model_args_are_the_plugins(name):
    """Every column's metric key is one its lmms-eval 0.7.3 task defines (the task YAML's metric_list, with
    the filter ``none``), and the model arguments are the QA table's, which the plugin accepts."""
    from lmms_eval.models import get_model
    from lmms_eval.utils import load_yaml_config

    from llava.eval.task_names import task_manager

    table = load_table(name)
    manager = task_manager(sorted({c.task for c in table.columns}))
    for column in table.columns:
        config = load_yaml_config(manager.task_index[column.task]["yaml_path"], mode="simple")
        assert column.metric in {f"{m['metric']},none" for m in config["metric_list"]}, column
    assert table.model_args == load_table(GENERATIVE[name]).model_args
    assert table.model_shape == load_table(GENERATIVE[name]).model_shape
    get_model(table.model).check_model_args(dict(table.model_args))
    if table.model == "aot_llava_vid":
        assert dict(table.model_args)["add_time_instruction"] is True   # the model is told the frame times


def test_the_generative_tasks_have_no_prompt_variant_of_the_builtins():
    """Charades-STA, TimeLens, YouCook2 and VATEX give every model their ``default`` prompt (only gemini_api has
    its own), so the four plugins get the prompt their built-ins get (docs/reproduce.md). Fails if an lmms-eval
    release adds a variant for one of the built-ins, which the plugin would then have to follow."""
    import lmms_eval

    from llava.families import family_of_plugin

    builtins = sorted({family_of_plugin(load_table(name).model).plugin.builtin for name in GENERATIVE})
    assert builtins == ["llava_onevision", "llava_vid", "qwen2_5_vl", "qwen3_vl"]
    tasks_dir = Path(lmms_eval.__file__).parent / "tasks"
    for folder in ("charades_sta", "timelens", "youcook2", "vatex"):
        for path in sorted((tasks_dir / folder).iterdir()):
            if path.suffix == ".yaml" or path.name.endswith("_yaml") or path.name.endswith("_template"):
                for builtin in builtins:
                    assert not re.search(rf"^\s+{builtin}\s*:", path.read_text(), re.M), (path, builtin)


def test_timelens_scores_offline_with_lmms_evals_own_scorer():
    """The timelens tasks are scored by lmms-eval's code on the answer text alone (no judge model): the first
    ``x - y`` interval against the annotated span; an answer without an interval (a failed sample's ``""``)
    scores IoU 0."""
    from lmms_eval.tasks.timelens import utils as timelens

    doc = {"video_path": "v.mp4", "query": "a person opens a door", "span": [[2.0, 6.0]]}
    answers = ["The event happens in 2.0 - 6.0 seconds.", "The event happens in 4.0 - 8.0 seconds.", ""]
    results = [timelens.timelens_process_results({**doc, "query": f"{doc['query']} {i}"}, [answer])
               for i, answer in enumerate(answers)]
    per_metric = {m: [r[m] for r in results] for m in results[0]}
    assert timelens.timelens_aggregate_miou(per_metric["timelens_mIOU"], None) == pytest.approx(100 * (1 + 1 / 3) / 3)
    assert timelens.timelens_aggregate_iou3(per_metric["timelens_IOU@3"], None) == pytest.approx(200 / 3)
    assert timelens.timelens_aggregate_iou5(per_metric["timelens_IOU@5"], None) == pytest.approx(100 / 3)


def test_published_figures_name_their_source_in_the_rendered_table(tmp_path):
    from llava.eval import gather as gather_mod

    qwen25, qwen3 = load_table("qwen2_5_vl_7b_generative"), load_table("qwen3_vl_8b_generative")
    full = qwen25.rows[0]
    assert full.paper_score("Charades-STA mIoU") == 43.6
    assert "Qwen2.5-VL Technical Report (arXiv:2502.13923), video benchmarks" in full.paper_source("Charades-STA mIoU")
    timelens = {c.label for c in qwen25.columns if "TimeLens" in c.label}
    assert {label for label, _ in full.paper} == timelens | {"Charades-STA mIoU"}
    assert all("TimeLens (arXiv:2512.14698)" in full.paper_source(c) for c in timelens)
    assert {label for label, _ in qwen3.rows[0].paper} == timelens
    assert dict(qwen3.rows[0].paper)["QVHighlights-TimeLens mIoU"] == 59.4
    for name in GENERATIVE:   # only full tokens has published figures, each with its source
        table = load_table(name)
        assert all(not row.paper and not row.sources for row in table.rows[1:]), name
        assert [c for c, _ in table.rows[0].paper] == [c for c, _ in table.rows[0].sources], name
    out, js = tmp_path / "t.md", tmp_path / "t.json"
    assert gather_mod.main(["qwen2_5_vl_7b_generative", "--runs", str(tmp_path / "runs"), "--out", str(out),
                            "--json", str(js), "--plot", str(tmp_path / "t.png")]) == 0
    markdown = out.read_text()
    paper = next(line for line in markdown.splitlines() if line.startswith("| ↳ paper |"))
    cells = [c.strip() for c in paper.strip("|").split("|")][1:]
    assert cells[:6] == ["—", "—", "—", "43.6 [1]", "59.7 [2]", "37.8 [2]"]
    assert cells[16:24] == ["—"] * 8   # YouCook2 and VATEX: no published figure
    assert "- [1] Qwen2.5-VL Technical Report (arXiv:2502.13923), video benchmarks" in markdown
    assert "- [2] TimeLens (arXiv:2512.14698)" in markdown
    data = json.loads(js.read_text())
    assert [e["id"] for e in data["paper_sources"]] == [1, 2]
    assert data["paper_sources"][0]["cells"] == [["Full tokens", "Charades-STA mIoU"]]
    assert len(data["paper_sources"][1]["cells"]) == 12
    assert data["rows"][0]["paper_sources"]["Charades-TimeLens mIoU"] == data["paper_sources"][1]["text"]


def test_columns_sharing_a_run_must_share_its_task_and_compression(tmp_path):
    table = yaml.safe_load((ROOT / "configs" / "eval" / "llava_ov_7b_generative.yaml").read_text())
    table["columns"][1]["task"] = "youcook2_val"
    path = tmp_path / "llava_ov_7b_generative.yaml"
    path.write_text(yaml.safe_dump(table))
    with pytest.raises(TableError, match="run 'Charades-STA' is a run of task 'temporal_grounding_charades'"):
        load_table(str(path))
    table["columns"][1]["task"] = "temporal_grounding_charades"
    table["rows"][1]["compression"] = {"default": "ov_25pct", "Charades-STA mIoU": "ov_15pct"}
    path.write_text(yaml.safe_dump(table))
    with pytest.raises(ValueError, match="share run 'Charades-STA' but have compressions 'ov_25pct' and 'ov_15pct'"):
        plan_commands(str(path))
