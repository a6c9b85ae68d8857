"""``aot_videomme`` is lmms-eval's built-in ``videomme`` with prompt entries keyed by the plugin names."""

from __future__ import annotations

from pathlib import Path

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.tasks import TaskManager  # noqa: E402
from lmms_eval.utils import load_yaml_config  # noqa: E402

TASKS = Path(__file__).resolve().parents[1] / "lmms_eval_tasks"
BUILTIN = Path(lmms_eval.__file__).parent / "tasks" / "videomme" / "videomme.yaml"
OURS = TASKS / "aot_videomme" / "aot_videomme.yaml"


def _plain(value):
    """YAML nodes of !function tags -> their text, so configs compare as data."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


def test_same_as_the_builtin_but_the_name_and_prompts():
    builtin = _plain(load_yaml_config(str(BUILTIN), mode="simple"))
    ours = _plain(load_yaml_config(str(OURS), mode="simple"))
    assert ours.pop("task") == "aot_videomme" and builtin.pop("task") == "videomme"
    ours_prompts, builtin_prompts = ours.pop("lmms_eval_specific_kwargs"), builtin.pop("lmms_eval_specific_kwargs")
    assert ours == builtin
    assert ours_prompts["aot_llava_vid"] == builtin_prompts["llava_vid"]
    assert ours_prompts["aot_llava_onevision"] == builtin_prompts["default"] == ours_prompts["default"]
    assert ours_prompts["aot_qwen2_5_vl"] == builtin_prompts["default"]  # the built-in has no qwen2_5_vl entry
    assert "qwen2_5_vl" not in builtin_prompts
    assert ours_prompts["aot_qwen3_vl"] == builtin_prompts["qwen3_vl"]


def test_hooks_are_lmms_evals_own():
    import importlib.util

    import lmms_eval.tasks.videomme.utils as builtin_utils

    spec = importlib.util.spec_from_file_location("aot_videomme_utils", TASKS / "aot_videomme" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("videomme_doc_to_visual", "videomme_doc_to_text", "videomme_process_results",
                 "videomme_aggregate_results"):
        assert getattr(module, name) is getattr(builtin_utils, name)


def test_registered_from_the_include_path():
    manager = TaskManager(include_path=str(TASKS), include_defaults=False)
    assert "aot_videomme" in manager.all_tasks
    assert Path(manager.task_index["aot_videomme"]["yaml_path"]).resolve() == OURS
