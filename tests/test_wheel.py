"""The package built as a wheel and installed into a new virtual environment works outside the
repository: from an empty folder, ``aot demo``, ``aot sweep`` on the smoke task, ``aot viz``, every
preset by name, and the smoke evaluation through the lmms-eval command line.

The new environment gets this package from the wheel alone; its dependencies (torch, transformers,
lmms-eval, ...) are the test environment's, seen through a folder of links that leaves out this
package's editable install, so nothing of the source checkout can be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

ROOT = Path(__file__).resolve().parents[1]
OWN = ("llava", "visionzip", "aot_configs")


def _run(cmd: list[str], cwd: Path, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(ROOT)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("aot_video-*.whl")
    venv = tmp / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    deps = tmp / "deps"   # the test environment's packages, less this package's editable install
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if name.startswith(("aot_video", "__editable__", "_aot_video")) or name in OWN or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    )
    (site / "aot_test_deps.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
          str(wheel)], cwd=tmp)
    return venv


@pytest.fixture
def empty(tmp_path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_installed_from_the_wheel_alone(wheel_env, empty):
    code = ("import llava, visionzip, json; from llava import resources; "
            "print(json.dumps([llava.__file__, visionzip.__file__, str(resources.tasks_dir()), "
            "str(resources.tables_dir()), "
            "str(resources.presets_dir()), resources.repo_root() is None]))")
    paths = json.loads(_run([str(wheel_env / "bin" / "python"), "-c", code], cwd=empty).stdout)
    assert paths[-1] is True
    assert all(str(wheel_env) in p and str(ROOT) not in p for p in paths[:-1]), paths
    assert paths[2].endswith("llava/eval/lmms_eval_tasks") and paths[4].endswith("visionzip/preset_configs")
    # the library ships no benchmark: they live in the repository's benchmarks/ and use the library
    site = Path(paths[1]).parents[1]
    shipped = [p.relative_to(site).as_posix() for top in ("llava", "visionzip", "benchmarks") if (site / top).exists()
               for p in (site / top).rglob("*.py")]
    assert shipped and not [p for p in shipped if p.startswith("benchmarks/") or "bench" in Path(p).name], shipped


def test_every_preset_by_name(wheel_env, empty):
    code = ("import visionzip as vz; names = vz.list_presets(None); [vz.get_preset(n) for n in names]; "
            "from llava.eval.tables import list_tables, load_table; [load_table(t) for t in list_tables()]; "
            "from llava.eval.reference import load_reference; "
            "print(len(names), len(list_tables()), len(load_reference()['runs']))")
    presets, tables, logged = map(int, _run([str(wheel_env / "bin" / "python"), "-c", code], cwd=empty).stdout.split())
    assert logged == len(json.loads((ROOT / "configs" / "eval" / "aot_release_logs.json").read_text())["runs"])
    assert presets == len(list((ROOT / "configs" / "compression").glob("*.yaml")))
    assert tables == len(list((ROOT / "configs" / "eval").glob("*.yaml")))


def test_demo_viz_and_sweep_from_an_empty_folder(wheel_env, empty):
    aot = str(wheel_env / "bin" / "aot")
    _run([aot, "demo", "--out", "demo", "--frames", "8"], cwd=empty)
    assert (empty / "demo" / "aot_tokens.png").is_file()
    _run([aot, "viz", "--out", "viz.png"], cwd=empty)   # its default video: a clip of the bundled smoke task
    assert (empty / "viz.png").stat().st_size > 10_000
    _run([aot, "sweep", "--methods", "aot", "--retentions", "0.25", "--limit", "2", "--out", "sweep"], cwd=empty)
    data = json.loads((empty / "sweep" / "sweep.json").read_text())
    assert [r["spec"] for r in data["runs"]] == ["full", "aot@0.25"] and not any(r["failed"] for r in data["runs"])
    assert all(r["efficiency"]["tasks"]["aot_smoke_mcq"]["samples"] == 2 for r in data["runs"])


def test_smoke_evaluation_through_the_lmms_eval_cli(wheel_env, empty):
    aot, python = str(wheel_env / "bin" / "aot"), str(wheel_env / "bin" / "python")
    tasks = _run([aot, "paths", "tasks"], cwd=empty).stdout.strip()
    _run([aot, "tiny-checkpoint", "tiny"], cwd=empty)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([python, "-m", "lmms_eval", "--model", "aot_llava_onevision",
          "--model_args", "pretrained=tiny,compression=paper_ov_10pct,max_frames_num=8,torch_dtype=float32",
          "--tasks", "aot_smoke_mcq", "--include_path", tasks, "--limit", "2", "--batch_size", "2", "--device", "cpu",
          "--output_path", "out", "--log_samples"], cwd=empty, env=env)
    (results,) = (empty / "out").rglob("*_results.json")
    data = json.loads(results.read_text())
    assert data["n-samples"]["aot_smoke_mcq"]["effective"] == 2 and 0 < data["throughput"]["avg_retention"] < 1
    _run([aot, "report", "out"], cwd=empty)
    assert list((empty / "out").rglob("*_aot_efficiency.json"))
