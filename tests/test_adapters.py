"""Every ``model_args`` key of the plugin models is honoured or refused (CPU, tiny checkpoint).

* each accepted key goes through lmms-eval 0.7.3's own path (``get_model(name).create_from_arg_string``
  with what ``simple_evaluate`` adds: ``batch_size``, ``max_batch_size``, ``device``) and is checked
  for the effect it names;
* an unknown key, and a key a built-in accepts but never reads, is refused with a ``ValueError`` that
  names it and lists the accepted keys, before anything loads;
* statically, every constructor parameter is read in the constructor's body, and every one has a
  behavioural check below (a new parameter without one fails here).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lmms_eval")

import lmms_eval.evaluator  # noqa: E402
from lmms_eval.models import get_model  # noqa: E402

from llava.conversation import conv_templates  # noqa: E402
from llava.eval.adapters.base import LMMS_EVAL_INJECTED_ARGS, AOTModelAdapter  # noqa: E402
from llava.eval.adapters.llava_onevision import AOTLlavaOneVision  # noqa: E402
from llava.eval.adapters.llava_video import AOTLlavaVid  # noqa: E402
from llava.eval.adapters.qwen2_5_vl import AOTQwen25VL  # noqa: E402
from llava.eval.adapters.qwen3_vl import AOTQwen3VL  # noqa: E402
from llava.eval.plugin import MODELS  # noqa: E402
from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint  # noqa: E402
from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl  # noqa: E402
from llava.fixtures.tiny_qwen3_vl import write_tiny_qwen3_vl  # noqa: E402
from llava.model.language_model.llava_qwen import LlavaQwenForCausalLM  # noqa: E402
from llava.video import write_synthetic_video  # noqa: E402

ADAPTERS: dict[str, type[AOTModelAdapter]] = {
    "aot_llava_onevision": AOTLlavaOneVision, "aot_llava_vid": AOTLlavaVid, "aot_qwen2_5_vl": AOTQwen25VL,
    "aot_qwen3_vl": AOTQwen3VL,
}
#: the checkpoint each plugin model is built on
CHECKPOINT_OF = {"aot_qwen2_5_vl": "qwen", "aot_qwen3_vl": "qwen3"}
#: what lmms-eval's simple_evaluate passes besides --model_args (None values are dropped)
INJECTED = {"batch_size": 1, "max_batch_size": None, "device": "cpu"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    ckpt = write_tiny_checkpoint(root / "ckpt")  # bilinear pooling, one newline token
    grid = write_tiny_checkpoint(root / "ckpt_grid", newline_position="grid", pool_mode="average")
    video = write_synthetic_video(root / "v.mp4", frames=40, fps=8, seed=3)  # 5 s
    custom = root / "custom_config.json"
    custom.write_text(json.dumps(json.loads((Path(ckpt) / "config.json").read_text()) | {"aot_test_marker": 7}))
    qwen = write_tiny_qwen2_5_vl(root / "qwen")
    qwen3 = write_tiny_qwen3_vl(root / "qwen3")
    return {"ckpt": str(ckpt), "grid": str(grid), "video": str(video), "custom": str(custom), "qwen": str(qwen),
            "qwen3": str(qwen3)}


def build(name: str, assets: dict, args: dict[str, Any], **additional: Any) -> AOTModelAdapter:
    """The model as ``python -m lmms_eval --model <name> --model_args <args>`` builds it."""
    base = {"pretrained": assets[CHECKPOINT_OF.get(name, "ckpt")], "torch_dtype": "float32"}
    arg_string = ",".join(f"{k}={v}" for k, v in (base | args).items())
    return get_model(name).create_from_arg_string(arg_string, INJECTED | additional)


def prepared(model: AOTModelAdapter, assets: dict, question: str = "What moves?"):
    if model.is_simple:
        visual = [assets["video"]]
    else:  # a chat model receives the document's messages (lmms-eval's doc_to_messages)
        content = [{"type": "video", "url": assets["video"]}, {"type": "text", "text": question}]
        visual = [{"role": "user", "content": content}]
    p = model._prepare(0, question, visual, {}, "t", 0)
    assert p.error is None, p.error
    return p


def _layout_keys(model) -> tuple[str, str]:
    return model.model.config.mm_spatial_pool_mode, model.model.config.mm_newline_position


def frames(model, assets) -> int:
    return prepared(model, assets).visuals[0].shape[0]


def generate_kwargs(model, assets) -> dict:
    calls = []
    real = model.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    model.model.generate = spy
    model._generate([prepared(model, assets)], {"max_new_tokens": 2, "temperature": 0})
    return calls[0]


def tie_weights_calls(monkeypatch, name, assets, value) -> int:
    calls = []
    real = LlavaQwenForCausalLM.tie_weights

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(LlavaQwenForCausalLM, "tie_weights", counting)
    build(name, assets, {"tie_weights": value})
    return len(calls)


class raises:  # noqa: N801 - reads as a check in the tables below
    """A value that is refused with a ``ValueError`` matching ``match``."""

    def __init__(self, match: str) -> None:
        self.match = match


# ----------------------------------------------------------------------------- the per-key checks
# key -> [(model_args value, check(model, assets) -> falsy when the key was not honoured, or raises(match))].
# "{ckpt}", "{grid}", "{custom}" are filled from the assets.
# A dict value is the whole model_args of the case.
def _attn_flash(m, a):
    # asked together with attn_implementation=eager: the flag overrides it (to sdpa where flash-attn or a GPU is
    # missing)
    return m.model.config._attn_implementation in ("flash_attention_2", "sdpa")


COMMON: dict[str, list[tuple[Any, Callable]]] = {
    "compression": [
        ("paper_ov_10pct", lambda m, a: m.compression_name == "paper_ov_10pct" and m.model.compression is not None),
        ("none", lambda m, a: m.compression_name == "none" and m.model.compression is None),
        ("ov_11pct", raises("paper_ov_10pct")),  # an unknown preset lists the presets
    ],
    "device": [("cpu", lambda m, a: m.device == torch.device("cpu"))],
    "batch_size": [(3, lambda m, a: m.batch_size == 3), (0, raises("batch_size=0 is not valid")),
                   ("auto", raises("batch_size='auto' is not valid"))],
    "max_batch_size": [(8, raises("max_batch_size=8 is not supported"))],  # accepted as None (INJECTED)
    "model_name": [("llava_qwen", lambda m, a: m.model.config.model_type == "llava_qwen"),
                   ("llava_llama", raises("model_name='llava_llama' selects"))],
    "attn_implementation": [("eager", lambda m, a: m.model.config._attn_implementation == "eager"),
                            ("bogus", raises("attn_implementation='bogus' is not valid"))],
    "device_map": [("auto", lambda m, a: m.device == torch.device("cpu")),
                   ("cpu", lambda m, a: m.device == torch.device("cpu")
                    and next(m.model.parameters()).device.type == "cpu"),
                   ("nowhere", raises("device_map='nowhere' is not valid"))],
    "conv_template": [("chatml_direct", lambda m, a: m.conv_template == "chatml_direct"
                       and prepared(m, a).prompt.startswith(conv_templates["chatml_direct"].system)),
                      ("no_such_template", raises("conv_template='no_such_template' is unknown"))],
    "use_cache": [(False, lambda m, a: m.use_cache is False and generate_kwargs(m, a)["use_cache"] is False)],
    "customized_config": [("{custom}", lambda m, a: m.model.config.aot_test_marker == 7)],
    "mm_spatial_pool_stride": [(4, lambda m, a: m.model.config.mm_spatial_pool_stride == 4)],
    "video_decode_backend": [("decord", lambda m, a: frames(m, a) > 0),
                             ("pyav", raises("video_decode_backend='pyav'"))],
    "torch_dtype": [("bfloat16", lambda m, a: m.model.dtype == torch.bfloat16),
                    ("float32", lambda m, a: m.model.dtype == torch.float32)],
}

CHECKS: dict[str, dict[str, list[tuple[Any, Callable]]]] = {
    "aot_llava_onevision": COMMON | {
        "pretrained": [("{grid}", lambda m, a: m.pretrained == a["grid"]
                        and m.model.config.mm_newline_position == "grid")],
        "use_flash_attention_2": [({"use_flash_attention_2": True, "attn_implementation": "eager"}, _attn_flash),
                                  ({"use_flash_attention_2": False, "attn_implementation": "eager"},
                                   lambda m, a: m.model.config._attn_implementation == "eager")],
        "max_frames_num": [(4, lambda m, a: frames(m, a) == 4)],
        "mm_spatial_pool_mode": [("average", lambda m, a: m.model.config.mm_spatial_pool_mode == "average")],
        "token_strategy": [("single", lambda m, a: prepared(m, a).prompt.count("<image>") == 1),
                           ("multiple", raises("token_strategy='multiple' is not supported"))],
    },
    "aot_llava_vid": COMMON | {
        "compression": [("video_25pct", lambda m, a: m.compression_name == "video_25pct"
                         and m.model.compression is not None),
                        ("none", lambda m, a: m.model.compression is None)],
        "pretrained": [("{grid}", lambda m, a: m.pretrained == a["grid"])],
        "torch_dtype": COMMON["torch_dtype"]
        + [("bfloat16", lambda m, a: prepared(m, a).visuals[0].dtype == torch.bfloat16)],
        "max_frames_num": [(3, lambda m, a: frames(m, a) == 3)],  # 5 frames at 1 fps, capped at 3
        "video_fps": [(2, lambda m, a: frames(m, a) == 10)],  # 5 s at 2 fps
        "mm_spatial_pool_mode": [("max", lambda m, a: m.model.config.mm_spatial_pool_mode == "max")],
        "mm_newline_position": [("frame", lambda m, a: m.model.config.mm_newline_position == "frame")],
        "overwrite": [
            # the checkpoint's bilinear / one_token, not llava_vid's average / grid
            (False, lambda m, a: _layout_keys(m) == ("bilinear", "one_token")),
            (True, lambda m, a: _layout_keys(m) == ("average", "grid")),
        ],
        "tie_weights": [(True, lambda m, a: True)],  # counted in test_tie_weights_is_called
        "force_sample": [(True, lambda m, a: frames(m, a) == 20)],  # max_frames_num (20) uniformly, not 5 at 1 fps
        "add_time_instruction": [(True, lambda m, a: "The video lasts for 5.00 seconds, and 5 frames"
                                  in prepared(m, a).prompt),
                                 (False, lambda m, a: "The video lasts" not in prepared(m, a).prompt)],
        "add_faster_video": [(False, lambda m, a: True), (True, raises("add_faster_video=True is not supported"))],
    },
}

def _pixels(m, a) -> int:
    video = prepared(m, a).visuals[0]  # (frames, channels, height, width) as qwen_vl_utils resized it
    return int(video.shape[-2] * video.shape[-1])


CHECKS["aot_qwen2_5_vl"] = {
    key: COMMON[key] for key in ("device", "batch_size", "max_batch_size", "torch_dtype")
} | {
    "pretrained": [("{qwen}", lambda m, a: m.pretrained == a["qwen"] and m.model.config.model_type == "qwen2_5_vl"),
                   ("{ckpt}", raises("is a 'llava' checkpoint; aot_qwen2_5_vl expected model_type 'qwen2_5_vl'"))],
    "compression": [("aot@0.25", lambda m, a: m.compression_name == "aot@0.25"
                     and m._seam.compression.token_budget == 0.25),
                    ("none", lambda m, a: m.compression_name == "none" and m._seam.compression is None),
                    ("ov_11pct", raises("paper_ov_10pct"))],
    "device_map": COMMON["device_map"],
    "attn_implementation": [("eager", lambda m, a: m.model.config._attn_implementation == "eager"),
                            ("bogus", raises("attn_implementation='bogus' is not valid"))],
    "use_cache": [(False, lambda m, a: m.use_cache is False and generate_kwargs(m, a)["use_cache"] is False)],
    "max_num_frames": [(4, lambda m, a: frames(m, a) == 4), (0, raises("max_num_frames=0 is not valid"))],
    "fps": [(2, lambda m, a: frames(m, a) == 10), (-1, raises(r"fps=-1(\.0)? is not valid"))],  # 5 s at 2 fps
    "max_pixels": [({"max_pixels": 6272, "min_pixels": 3136}, lambda m, a: _pixels(m, a) <= 6272),
                   (3000, raises("min_pixels=200704 exceeds max_pixels=3000"))],  # the built-in's min_pixels default
    "min_pixels": [(50176, lambda m, a: _pixels(m, a) >= 50176)],  # the 64 x 64 px video is resized up
    "shallow_score_layer": [({"shallow_score_layer": 0, "deep_score_layer": 3},
                             lambda m, a: m._seam.score_layers == (0, 3)),
                            ({"shallow_score_layer": 0}, raises("expected both or neither"))],
    "deep_score_layer": [({"shallow_score_layer": 1, "deep_score_layer": 2},
                          lambda m, a: m._seam.score_layers == (1, 2)),
                         ({}, lambda m, a: m._seam.score_layers == (1, 3))],  # the fixture's full-attention blocks
}

CHECKS["aot_qwen3_vl"] = {
    key: CHECKS["aot_qwen2_5_vl"][key]
    for key in ("device", "batch_size", "max_batch_size", "torch_dtype", "device_map", "attn_implementation",
                "use_cache", "max_num_frames", "fps", "max_pixels", "min_pixels", "shallow_score_layer",
                "deep_score_layer")
} | {
    "pretrained": [("{qwen3}", lambda m, a: m.pretrained == a["qwen3"] and m.model.config.model_type == "qwen3_vl"),
                   ("{qwen}", raises("is a 'qwen2_5_vl' checkpoint; aot_qwen3_vl expected model_type 'qwen3_vl' "
                                     "or 'qwen3_vl_moe'"))],
    "compression": [("aot@0.25", lambda m, a: m.compression_name == "aot@0.25"
                     and m._seam.compression.token_budget == 0.25),
                    ("none", lambda m, a: m._seam.compression is None), ("ov_11pct", raises("paper_ov_10pct"))],
    # the video items carry total_pixels in place of max_pixels (and max_frames in place of nframes)
    "total_pixels": [({"total_pixels": 100000, "min_pixels": 1024},
                      lambda m, a: (lambda k: k["total_pixels"] == 100000 and "max_pixels" not in k
                                    and "nframes" not in k)(prepared(m, a).payload["video_kwargs"])),
                     (0, raises("total_pixels=0 is not valid"))],
    "system_prompt": [("Be brief.", lambda m, a: prepared(m, a).prompt.startswith(
        "<|im_start|>system\nBe brief.<|im_end|>"))],
    "enable_thinking": [(True, lambda m, a: m.enable_thinking is True and m._answer("plan</think> B") == "B"),
                        (False, lambda m, a: m.enable_thinking is False and m._answer("B") == "B")],
}

CASES = [(name, key, i, value, check) for name, keys in CHECKS.items() for key, entries in keys.items()
         for i, (value, check) in enumerate(entries)]


@pytest.mark.parametrize(("name", "key", "i", "value", "check"), CASES,
                         ids=[f"{n}-{k}-{i}" for n, k, i, _, _ in CASES])
def test_each_key_through_lmms_eval(assets, name, key, i, value, check):
    value = value.format(**assets) if isinstance(value, str) else value
    if isinstance(value, dict):
        routes = [(value, {})]
    elif key in LMMS_EVAL_INJECTED_ARGS:
        # both ways lmms-eval hands it over: its CLI flag (--device cpu) or --model_args (the flag left unset)
        routes = [({}, {key: value}), ({key: value}, {key: None})]
    elif key == "device_map":
        routes = [({key: value}, {"device": None})]  # no --device: device_map decides
    else:
        routes = [({key: value}, {})]
    for args, additional in routes:
        if isinstance(check, raises):
            with pytest.raises(ValueError, match=check.match):
                build(name, assets, args, **additional)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compression vs. the tiny checkpoint's pooling; the flash-attn fallback
            model = build(name, assets, args, **additional)
        assert check(model, assets), (args, additional)


def test_device_map_conflict_is_refused_against_the_device(assets):
    with pytest.raises(ValueError, match="device='cpu' and device_map='cuda:0' name different devices"):
        build("aot_llava_onevision", assets, {"device_map": "cuda:0"})


def test_overwrite_false_refuses_the_keys_it_would_ignore(assets):
    with pytest.raises(ValueError, match=r"\['mm_spatial_pool_stride'\] given with overwrite=False"):
        build("aot_llava_vid", assets, {"overwrite": False, "mm_spatial_pool_stride": 4})


def test_tie_weights_is_called(assets, monkeypatch):
    tied = tie_weights_calls(monkeypatch, "aot_llava_vid", assets, True)
    assert tied == tie_weights_calls(monkeypatch, "aot_llava_vid", assets, False) + 1


def test_every_key_has_a_check():
    for name, cls in ADAPTERS.items():
        assert set(cls.accepted_model_args()) - set(CHECKS[name]) == set(), name
        assert set(CHECKS[name]) <= set(cls.accepted_model_args()), name


def test_registered_names_and_classes():
    assert set(MODELS) == set(ADAPTERS)
    for name, cls in ADAPTERS.items():
        assert get_model(name) is cls and cls.MODEL_ID == name


def test_lmms_eval_injects_what_the_adapters_accept():
    """simple_evaluate's ``create_from_arg_string(model_args, {...})`` passes these keys; each adapter
    takes them all."""
    tree = ast.parse(inspect.getsource(lmms_eval.evaluator))
    calls = [n for n in ast.walk(tree)
             if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "create_from_arg_string"]
    injected = {k.value for c in calls for k in c.args[1].keys}
    assert injected == set(LMMS_EVAL_INJECTED_ARGS)
    for cls in ADAPTERS.values():
        assert injected <= set(cls.accepted_model_args())


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_unknown_key_is_refused_naming_it(name):
    cls = ADAPTERS[name]
    expected = f"model_args key 'foo' is not accepted by {name}; expected one of {sorted(cls.accepted_model_args())}"
    with pytest.raises(ValueError) as info:  # before anything loads: the checkpoint does not exist
        get_model(name).create_from_arg_string("pretrained=/nonexistent,foo=1", INJECTED)
    assert str(info.value) == expected
    with pytest.raises(ValueError, match=r"model_args keys \['foo', 'bar'\] are not accepted"):
        cls(pretrained="/nonexistent", foo=1, bar=2)


@pytest.mark.parametrize(("name", "key"), [(n, k) for n, c in ADAPTERS.items() for k in c.RETIRED_MODEL_ARGS])
def test_retired_keys_are_refused_with_the_reason(name, key):
    cls = ADAPTERS[name]
    with pytest.raises(ValueError) as info:
        get_model(name).create_from_arg_string(f"pretrained=/nonexistent,{key}=True", INJECTED)
    message = str(info.value)
    assert message.startswith(f"model_args key {key!r} is not accepted by {name} (")
    assert cls.RETIRED_MODEL_ARGS[key] in message and str(sorted(cls.accepted_model_args())) in message


# ----------------------------------------------------------------------------- static: every parameter is read
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_constructor_parameter_is_read(name):
    cls = ADAPTERS[name]
    (fn,) = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__))).body
    params = [a.arg for a in fn.args.args + fn.args.kwonlyargs if a.arg != "self"]
    assert fn.args.vararg is None and fn.args.kwarg is None, "a plugin model names every model_args key"
    assert params == cls.accepted_model_args()
    read = {n.id for n in ast.walk(ast.Module(body=fn.body, type_ignores=[]))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert [p for p in params if p not in read] == []
