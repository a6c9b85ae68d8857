"""LoRA fine-tuning outputs: apply_lora -> save_lora -> load_pretrained_model(lora_dir, base) and the
merge CLI give the model that was trained (same logits, with and without AOT), in LLaVA-NeXT's layouts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from llava.conversation import conv_templates
from llava.fixtures.tiny_checkpoint import tiny_state_dict, write_tiny_checkpoint
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import CheckpointLayoutError, load_pretrained_model
from llava.train import lora as lora_mod
from llava.train.lora import apply_lora, lora_target_modules, save_lora
from llava.train.merge_lora import main as merge_main
from llava.video import load_video, write_synthetic_video

pytest.importorskip("peft")  # the training extra

FRAMES = 8  # AOT's inter stage needs one frame per clip (8 clips)
PRESET = "paper_ov_10pct"
LLM_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
LOAD = {"torch_dtype": "float32", "attn_implementation": "sdpa"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("lora") / "base")


@pytest.fixture(scope="module")
def inputs(base, tmp_path_factory):
    tokenizer, _, processor, _ = load_pretrained_model(str(base), None, "tiny", **LOAD)
    video = write_synthetic_video(tmp_path_factory.mktemp("lora_video") / "v.mp4", frames=16, seed=3)
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat happens?")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
    pixels = processor.preprocess(load_video(str(video), max_frames=FRAMES).frames, return_tensors="pt")["pixel_values"]
    return ids, pixels


def logits(model, inputs, compression=None) -> torch.Tensor:
    ids, pixels = inputs
    model.set_compression(compression)
    try:
        with torch.no_grad():
            return model(input_ids=ids, images=[pixels], modalities=["video"]).logits
    finally:
        model.set_compression(None)


def _train(base, *, language_model: bool = False, seed: int = 0):
    """A PeftModel as the training recipe leaves it: parts frozen by mm_tunable_parts, LoRA applied,
    then weights moved (non-trivial lora_B, a changed projector, the LLM itself when tuned)."""
    tokenizer, model, _, _ = load_pretrained_model(str(base), None, "tiny", **LOAD)
    model.requires_grad_(False)
    model.get_model().mm_projector.requires_grad_(True)
    if language_model:
        model.get_model().layers.requires_grad_(True)
    peft_model = apply_lora(model, r=8, alpha=16)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.05)
        model.get_model().mm_projector[0].weight.add_(
            torch.randn(model.get_model().mm_projector[0].weight.shape, generator=g) * 0.05
        )
        if language_model:
            model.get_model().layers[0].self_attn.q_proj.base_layer.weight.add_(0.02)
            model.get_model().layers[1].input_layernorm.weight.mul_(1.5)
    peft_model.eval()
    return tokenizer, peft_model


@pytest.fixture(scope="module")
def trained(base, inputs, tmp_path_factory):
    tokenizer, peft_model = _train(base)
    ref = {"plain": logits(peft_model, inputs), "aot": logits(peft_model, inputs, PRESET)}
    lora_dir = save_lora(
        peft_model, tmp_path_factory.mktemp("lora_out") / "run", model_base=str(base), tokenizer=tokenizer
    )
    return peft_model, lora_dir, ref


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# -- applying LoRA

def test_target_modules_are_exactly_the_llm_linears(base):
    _, model, _, _ = load_pretrained_model(str(base), None, "tiny", **LOAD)
    layers = model.config.num_hidden_layers
    assert lora_target_modules(model) == [f"model.layers.{i}.{m}" for i in range(layers) for m in LLM_LINEARS]
    # the vision tower has q/k/v_proj too: none of its modules, nor the projector or lm_head, is wrapped
    peft_model = apply_lora(model, r=4)
    wrapped = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    assert wrapped == {f"base_model.model.model.layers.{i}.{m}" for i in range(layers) for m in LLM_LINEARS}


def test_apply_lora_keeps_requires_grad_outside_lora(trained):
    peft_model, _, _ = trained
    flags = {name: p.requires_grad for name, p in peft_model.named_parameters()}
    assert all(flags[n] for n in flags if "lora_" in n)
    assert all(flags[n] for n in flags if ".mm_projector." in n)
    assert not any(flags[n] for n in flags if "vision_tower" in n or ".base_layer." in n or "embed_tokens" in n)
    assert peft_model.peft_config["default"].r == 8 and peft_model.peft_config["default"].lora_dropout == 0.05


def test_apply_lora_rejects_bad_settings(base):
    _, model, _, _ = load_pretrained_model(str(base), None, "tiny", **LOAD)
    with pytest.raises(ValueError, match="bias='some'"):
        apply_lora(model, bias="some")
    with pytest.raises(ValueError, match="r=0"):
        apply_lora(model, r=0)
    with pytest.raises(ValueError, match="already a PeftModel"):
        apply_lora(apply_lora(model, r=2))


# -- the LoRA output folder

def test_lora_folder_layout(trained, base):
    peft_model, lora_dir, _ = trained
    for name in ("adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin", "config.json",
                 "tokenizer_config.json", "tokenizer.json", "generation_config.json"):
        assert (lora_dir / name).is_file(), name
    adapter = json.loads((lora_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base.resolve())
    assert (adapter["r"], adapter["lora_alpha"], adapter["task_type"]) == (8, 16, "CAUSAL_LM")
    config = json.loads((lora_dir / "config.json").read_text())
    assert config["lora_base_model"] == str(base.resolve())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaQwenForCausalLM"]
    assert config["mm_vision_tower"] == "google/siglip-so400m-patch14-384" and config["aot_compression"] is None
    non_lora = torch.load(lora_dir / "non_lora_trainables.bin", weights_only=True)
    assert sorted(non_lora) == sorted(
        f"base_model.model.model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    )
    torch.testing.assert_close(non_lora["base_model.model.model.mm_projector.0.weight"],
                               peft_model.get_base_model().model.mm_projector[0].weight)


@pytest.mark.parametrize("with_base", [True, False], ids=["model_base", "recorded_base"])
def test_reload_gives_the_trained_model(trained, base, inputs, with_base):
    _, lora_dir, ref = trained
    tokenizer, model, processor, context_len = load_pretrained_model(
        str(lora_dir), str(base) if with_base else None, "llava_qwen_lora", device_map="auto", **LOAD)
    assert type(model).__name__ == "LlavaQwenForCausalLM" and context_len == 32768
    assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
    assert not hasattr(model.config, "lora_base_model") and model.compression is None
    assert processor is not None and tokenizer.convert_tokens_to_ids("<|im_end|>") is not None
    _close(logits(model, inputs), ref["plain"])
    _close(logits(model, inputs, PRESET), ref["aot"])
    assert not torch.allclose(
        ref["plain"], logits(load_pretrained_model(str(base), None, "x", **LOAD)[1], inputs), atol=1e-3
    )


def test_reload_with_overwrite_config_aot(trained, inputs):
    _, lora_dir, ref = trained
    _, model, _, _ = load_pretrained_model(
        str(lora_dir), None, "x", overwrite_config={"aot_compression": PRESET}, **LOAD
    )
    assert model.compression is not None
    with torch.no_grad():
        out = model(input_ids=inputs[0], images=[inputs[1]], modalities=["video"]).logits
    _close(out, ref["aot"])


def test_aot_compression_in_the_saved_config_is_reapplied(trained, base, inputs, tmp_path):
    peft_model, _, ref = trained
    peft_model.set_compression(PRESET)
    try:
        save_lora(peft_model, tmp_path / "aot", model_base=str(base))
    finally:
        peft_model.set_compression(None)
    assert json.loads((tmp_path / "aot" / "config.json").read_text())["aot_compression"]["num_anchors"] > 0
    _, model, _, _ = load_pretrained_model(str(tmp_path / "aot"), None, "x", **LOAD)
    assert model.compression is not None
    with torch.no_grad():
        out = model(input_ids=inputs[0], images=[inputs[1]], modalities=["video"]).logits
    _close(out, ref["aot"])


def test_language_model_tuned_besides_lora(base, inputs, tmp_path):
    """mm_language_model with LoRA: the wrapped linears' base weights are non-LoRA trainables
    (``…q_proj.base_layer.weight``) and land on the plain model's ``…q_proj.weight``."""
    tokenizer, peft_model = _train(base, language_model=True, seed=1)
    ref = logits(peft_model, inputs)
    save_lora(peft_model, tmp_path / "llm", model_base=str(base))
    non_lora = torch.load(tmp_path / "llm" / "non_lora_trainables.bin", weights_only=True)
    assert "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight" in non_lora
    _, model, _, _ = load_pretrained_model(str(tmp_path / "llm"), None, "x", **LOAD)
    _close(logits(model, inputs), ref)


# -- merging

def test_merge_cli_writes_the_original_layout(trained, base, inputs, tmp_path, capsys):
    _, lora_dir, ref = trained
    out = tmp_path / "merged"
    assert merge_main(["--model-path", str(lora_dir), "--save-path", str(out), "--max-shard-size", "200KB"]) == 0
    assert "merged checkpoint written" in capsys.readouterr().out
    index = json.loads((out / "model.safetensors.index.json").read_text())
    original = tiny_state_dict(json.loads((base / "config.json").read_text()))  # names from the layout description
    assert sorted(index["weight_map"]) == sorted(original) and len(set(index["weight_map"].values())) > 1
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaQwenForCausalLM"]
    assert config["rope_theta"] == 1e6 and "lora_base_model" not in config
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        assert (out / name).is_file(), name
    assert not (out / "adapter_config.json").exists()
    _, model, _, _ = load_pretrained_model(str(out), None, "llava_qwen", **LOAD)
    _close(logits(model, inputs), ref["plain"])
    _close(logits(model, inputs, PRESET), ref["aot"])


def test_merge_cli_llava_flags_and_errors(trained, base, tmp_path, capsys):
    _, lora_dir, _ = trained
    out = tmp_path / "m"
    assert merge_main(["--model-path", str(lora_dir), "--model-base", str(base), "--save-model-path", str(out)]) == 0
    assert (out / "config.json").is_file()
    assert merge_main(["--model-path", str(lora_dir), "--save-path", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert merge_main(["--model-path", str(base), "--save-path", str(tmp_path / "x")]) == 2
    assert "expected a LoRA output folder" in capsys.readouterr().err


def test_merge_cli_as_a_module(trained, tmp_path):
    _, lora_dir, _ = trained
    run = subprocess.run([sys.executable, "-m", "llava.train.merge_lora", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--model-path" in run.stdout and "--model-base" in run.stdout


# -- errors

def _copy(lora_dir: Path, dest: Path, *, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(lora_dir, dest, ignore=shutil.ignore_patterns(*drop))
    return dest


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_recorded_base_that_does_not_exist(trained, tmp_path):
    _, lora_dir, _ = trained
    moved = _copy(lora_dir, tmp_path / "moved")
    gone = str(tmp_path / "gone" / "base")
    _edit_json(moved / "config.json", lora_base_model=gone)
    with pytest.raises(CheckpointLayoutError, match=r"base model .*gone/base.*recorded in .*pass model_base"):
        load_pretrained_model(str(moved), None, "x", **LOAD)
    with pytest.raises(CheckpointLayoutError, match=r"base model .*gone/base.*\(model_base\)"):
        load_pretrained_model(str(lora_dir), gone, "x", **LOAD)


def test_adapter_config_base_is_the_fallback(trained, base, inputs, tmp_path):
    _, lora_dir, ref = trained
    folder = _copy(lora_dir, tmp_path / "f")
    _edit_json(folder / "config.json", lora_base_model=None)
    assert lora_mod.recorded_base(folder) == str(base.resolve())
    _close(logits(load_pretrained_model(str(folder), None, "x", **LOAD)[1], inputs), ref["plain"])
    _edit_json(folder / "adapter_config.json", base_model_name_or_path=None)
    with pytest.raises(ValueError, match="records no base model.*pass model_base"):
        load_pretrained_model(str(folder), None, "x", **LOAD)


def test_model_base_with_a_full_checkpoint(base):
    with pytest.raises(ValueError, match="not a LoRA folder.*projector-only mode .* not supported"):
        load_pretrained_model(str(base), str(base), "x", **LOAD)


def test_missing_non_lora_trainables_warns_and_keeps_the_base_weights(trained, base, tmp_path):
    """Decision: as for a plain peft adapter, the folder loads with a warning; every non-LoRA weight
    (here the projector, which was trained) is the base's, the LoRA deltas are merged."""
    _, lora_dir, _ = trained
    folder = _copy(lora_dir, tmp_path / "adapter_only", drop=("non_lora_trainables.bin",))
    with pytest.warns(UserWarning, match="no non_lora_trainables.bin"):
        _, model, _, _ = load_pretrained_model(str(folder), None, "x", **LOAD)
    _, plain, _, _ = load_pretrained_model(str(base), None, "x", **LOAD)
    _, full, _, _ = load_pretrained_model(str(lora_dir), None, "x", **LOAD)
    got, base_sd, full_sd = model.state_dict(), plain.state_dict(), full.state_dict()
    for key in ("model.mm_projector.0.weight", "model.embed_tokens.weight"):
        torch.testing.assert_close(got[key], base_sd[key])
    assert not torch.equal(full_sd["model.mm_projector.0.weight"], base_sd["model.mm_projector.0.weight"])
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        torch.testing.assert_close(got[key], full_sd[key])
        assert not torch.allclose(got[key], base_sd[key])


def test_non_lora_trainables_that_do_not_fit(trained, tmp_path):
    _, lora_dir, _ = trained
    folder = _copy(lora_dir, tmp_path / "bad")
    torch.save({"base_model.model.model.not_a_module.weight": torch.zeros(2),
                "base_model.model.model.mm_projector.0.weight": torch.zeros(3, 3)}, folder / "non_lora_trainables.bin")
    with pytest.raises(CheckpointLayoutError, match=r"not_a_module.*mm_projector\.0\.weight: \(3, 3\)"):
        load_pretrained_model(str(folder), None, "x", **LOAD)


def test_lora_folder_without_peft_says_how_to_install(trained, monkeypatch):
    _, lora_dir, _ = trained
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[train\]"'):
        load_pretrained_model(str(lora_dir), None, "x", **LOAD)


def test_save_lora_needs_a_peft_model_and_a_base(base, trained, tmp_path):
    peft_model, _, _ = trained
    _, model, _, _ = load_pretrained_model(str(base), None, "x", **LOAD)
    with pytest.raises(ValueError, match="expected the peft.PeftModel"):
        save_lora(model, tmp_path / "a", model_base=str(base))
    with pytest.raises(ValueError, match="model_base=''"):
        save_lora(peft_model, tmp_path / "b", model_base="")


# -- DeepSpeed ZeRO-3: partitioned parameters are gathered before saving

ZERO3_SCRIPT = textwrap.dedent("""
    import sys, torch, deepspeed
    from safetensors.torch import load_file
    sys.path.insert(0, {tests!r})
    from test_lora import _train
    deepspeed.init_distributed(dist_backend="gloo")
    base, out = {base!r}, {out!r}
    _, peft_model = _train(base)
    from llava.train.lora import save_lora
    save_lora(peft_model, out + "/plain", model_base=base)
    config = {{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {{"stage": 3}},
              "optimizer": {{"type": "AdamW", "params": {{"lr": 1e-4, "torch_adam": True}}}}}}
    engine, *_ = deepspeed.initialize(model=peft_model, config=config,
                                      model_parameters=[p for p in peft_model.parameters() if p.requires_grad])
    lora_a = next(p for n, p in engine.module.named_parameters() if "lora_A" in n)
    assert hasattr(lora_a, "ds_id") and lora_a.numel() == 0, "not partitioned"
    save_lora(engine.module, out + "/zero3", model_base=base)
    for name, load in (("adapter_model.safetensors", load_file), ("non_lora_trainables.bin", torch.load)):
        a, b = load(out + "/plain/" + name), load(out + "/zero3/" + name)
        assert a.keys() == b.keys() and len(a) > 0 and all(torch.equal(a[k], b[k]) for k in a), name
    print("ZERO3_OK")
""")


@pytest.mark.slow
def test_save_lora_under_deepspeed_zero3(base, tmp_path):
    pytest.importorskip("deepspeed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                        "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": ""}
    script = ZERO3_SCRIPT.format(tests=str(Path(__file__).parent), base=str(base), out=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and "ZERO3_OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
