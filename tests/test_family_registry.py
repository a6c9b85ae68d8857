"""The family registry from a user's side: the built-in families, its errors, and a family plus a method
added outside the package (tests/toy_family.py, tests/toy_method.py) through real entry points, run by
``aot infer`` and the real lmms-eval command line with no edit to the package."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava import families as fam
from llava.eval import plugin

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
VIDEO = ROOT / "lmms_eval_tasks" / "aot_smoke" / "red_right.mp4"
BUILTINS = {"llava_onevision": "llava_onevision", "llava_video": "llava_vid", "qwen2_5_vl": "qwen2_5_vl",
            "qwen3_vl": "qwen3_vl"}


def test_builtin_families_and_their_plugins():
    assert set(BUILTINS) <= set(fam.list_families())
    for name, builtin in BUILTINS.items():
        spec = fam.get_family(name)
        assert spec.plugin.builtin == builtin and spec.plugin.model_id == f"aot_{builtin}"
        assert plugin.MODELS[spec.plugin.model_id] == spec.plugin.class_path
        assert (spec.plugin.model_id in plugin.CHAT_MODELS) == spec.plugin.chat == (spec.layout == "hf")


def test_builtin_plugin_models_are_lmms_evals_and_follow_its_builtins():
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model

    for name, builtin in BUILTINS.items():
        spec = fam.get_family(name)
        cls = get_model(spec.plugin.model_id)
        assert f"{cls.__module__}.{cls.__name__}" == spec.plugin.class_path
        assert cls.MODEL_ID == spec.plugin.model_id
        assert cls.is_simple == (not spec.plugin.chat) == get_model(builtin).is_simple


def test_model_types_pick_the_family():
    assert fam.family_for_model_type("llava").name == fam.DEFAULT_FAMILY == "llava_onevision"
    assert fam.family_for_model_type("qwen3_vl_moe").name == "qwen3_vl"
    assert fam.family_for_model_type("qwen2_5_vl").name == "qwen2_5_vl"
    assert fam.family_for_model_type("bert") is None


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ValueError, match=r"family='nope' is not registered; expected one of .*'qwen3_vl'"):
        fam.get_family("nope")
    with pytest.raises(ValueError, match=r"model='aot_nope' is not a plugin model .*'aot_llava_vid'"):
        fam.family_of_plugin("aot_nope")


def test_registration_refuses_clashes():
    ov = fam.get_family("llava_onevision")
    with pytest.raises(ValueError, match="already registered"):
        fam.register_family(dataclasses.replace(ov, title="other"))
    with pytest.raises(ValueError, match="plugin model_id 'aot_llava_onevision' is family 'llava_onevision'"):
        fam.register_family(dataclasses.replace(ov, name="twin", model_types=("twin",)))
    with pytest.raises(ValueError, match="model_type 'llava' is auto-detected as family 'llava_onevision'"):
        fam.register_family(dataclasses.replace(ov, name="twin", plugin=dataclasses.replace(ov.plugin, model_id="x")))
    with pytest.raises(ValueError, match="expects a llava.families.FamilySpec; got PluginSpec"):
        fam.register_family(ov.plugin)
    with pytest.raises(ValueError, match="layout='lava' is not valid"):
        dataclasses.replace(ov, layout="lava")
    with pytest.raises(ValueError, match="class_path='Nope' is not valid"):
        fam.PluginSpec("aot_x", "Nope", builtin="x")


def test_registered_in_process_reaches_the_plugin_and_tables():
    ov = fam.get_family("llava_onevision")
    spec = dataclasses.replace(ov, name="in_process", model_types=("in_process",),
                               plugin=fam.PluginSpec("aot_in_process", "x.y.Z", builtin="llava_onevision", chat=True,
                                                     frames_arg="nframes"))
    fam.register_family(spec)
    try:
        assert "in_process" in fam.list_families() and plugin.MODELS["aot_in_process"] == "x.y.Z"
        assert "aot_in_process" in plugin.CHAT_MODELS
        pytest.importorskip("lmms_eval")
        assert any(m.model_id == "aot_in_process" and m.chat_class_path == "x.y.Z" for m in plugin.manifests())
    finally:
        fam.unregister_family("in_process")
    assert "aot_in_process" not in plugin.MODELS


def test_checkpoint_family_reads_model_type_and_checks_family(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert fam.checkpoint_family(str(tmp_path)).name == "llava_onevision"
    assert fam.checkpoint_family(str(tmp_path), "llava_video").name == "llava_video"
    with pytest.raises(ValueError, match=r"--family 'qwen3_vl' runs checkpoints of model_type \['qwen3_vl', "):
        fam.checkpoint_family(str(tmp_path), "qwen3_vl")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert fam.checkpoint_family(str(tmp_path)).name == "qwen2_5_vl"
    (tmp_path / "config.json").write_text(json.dumps({}))  # no model_type: the original layout's loader decides
    assert fam.checkpoint_family(str(tmp_path)).name == fam.DEFAULT_FAMILY


def test_aot_infer_refuses_an_unknown_or_mismatched_family(tmp_path, capsys):
    from llava.cli import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    base = ["infer", "--model", str(tmp_path), "--video", str(VIDEO), "--question", "Q?", "--compression", "none"]
    assert main([*base, "--family", "nope"]) == 2
    assert "aot infer: error: family='nope' is not registered; expected one of" in capsys.readouterr().err
    assert main([*base, "--family", "llava_video"]) == 2
    assert "--family 'llava_video' runs checkpoints of model_type ['llava', 'llava_qwen']" in capsys.readouterr().err


def test_default_score_layers():
    import visionzip

    aot = visionzip.AOTConfig()
    assert fam.get_family("llava_video").score_layers(None) == (aot.shallow_layer, aot.deep_layer)
    pytest.importorskip("torchvision")
    from transformers import Qwen2_5_VLConfig

    from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl  # noqa: F401 - the Qwen families' configs

    config = Qwen2_5_VLConfig(vision_config={"depth": 8, "fullatt_block_indexes": [1, 3, 5, 7]})
    assert fam.get_family("qwen2_5_vl").score_layers(config) == (1, 7)


# ------------------------------------------------------------------ a family and a method from outside


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """An installed distribution that only declares entry points: the toy family and the toy method."""
    root = tmp_path_factory.mktemp("outside")
    dist = root / "site" / "aot_toys-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aot-toys\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aot.families]\ntoy_llava = toy_family:SPEC\n\n"
                                           "[visionzip.methods]\nevery_other = toy_method:SPEC\n")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, str(root / "site"), str(TESTS)]))
    import toy_family

    ckpt = toy_family.write_tiny_toy(root / "ckpt")
    return {"root": root, "env": env, "ckpt": ckpt}


def _run(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_the_entry_point_family_is_listed_without_an_edit(outside):
    code = ("from llava import families; from llava.eval import plugin; import visionzip; "
            "print(families.get_family('toy_llava').plugin.model_id, 'aot_toy_llava' in plugin.MODELS, "
            "'every_other' in visionzip.list_methods())")
    assert _run(["-c", code], outside["env"], outside["root"]).stdout.split() == ["aot_toy_llava", "True", "True"]


def test_aot_infer_runs_the_toy_family_by_its_model_type(outside, tmp_path):
    """Detected by ``model_type: toy_llava``, compressed by the toy method (both from entry points)."""
    base = ["-m", "llava.cli", "infer", "--model", str(outside["ckpt"]), "--video", str(VIDEO), "--question", "Q?",
            "--max-frames", "8", "--dtype", "float32", "--device", "cpu", "--max-new-tokens", "3"]
    runs = {}
    for compression in ("none", "every_other@0.5"):
        out = tmp_path / f"{compression}.json"
        proc = _run([*base, "--compression", compression, "--json", str(out)], outside["env"], tmp_path)
        assert "answer:" in proc.stdout and "retention (paper definition)" in proc.stdout
        runs[compression] = json.loads(out.read_text())
    none, half = runs["none"], runs["every_other@0.5"]
    assert none["family"] == half["family"] == "toy_llava"
    # the toy checkpoint's twist: 8 frames of 13 x 13 average-pooled cells, a newline after each row
    assert none["frames"] == 8 and none["visual_tokens_plain"] == none["visual_tokens"] == 8 * 13 * 14
    assert half["visual_tokens"] < half["visual_tokens_plain"] == none["visual_tokens_plain"]
    assert half["compression"] == "every_other@0.5"


def test_lmms_eval_runs_the_toy_family_plugin(outside, tmp_path):
    pytest.importorskip("lmms_eval")
    out = tmp_path / "out"
    _run(["-m", "lmms_eval", "--model", "aot_toy_llava",
          "--model_args", f"pretrained={outside['ckpt']},compression=every_other@0.5",
          "--tasks", "aot_smoke_mcq", "--include_path", str(ROOT / "lmms_eval_tasks"), "--limit", "2",
          "--batch_size", "1", "--device", "cpu", "--output_path", str(out), "--log_samples"], outside["env"], tmp_path)
    (results,) = out.rglob("*_results.json")
    data = json.loads(results.read_text())
    assert data["config"]["model"] == "aot_toy_llava"
    assert data["n-samples"]["aot_smoke_mcq"]["effective"] == 2 and 0 < data["throughput"]["avg_retention"] < 1
