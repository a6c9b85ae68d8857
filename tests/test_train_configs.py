"""Training configs: DeepSpeed JSONs (configs/deepspeed), train YAMLs (configs/train), the launchers
(scripts/train) and how ``llava.train.arguments.parse_args`` takes them. Nothing here trains."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava.train.arguments import parse_args

ROOT = Path(__file__).resolve().parents[1]
DS_DIR = ROOT / "configs" / "deepspeed"
TRAIN_DIR = ROOT / "configs" / "train"
SCRIPTS = ROOT / "scripts" / "train"
TRAIN_CONFIGS = sorted(p.name for p in TRAIN_DIR.glob("*.yaml"))

#: file -> (ZeRO stage, optimizer offload device, parameter offload device or None for ZeRO-2)
DS_EXPECTED = {
    "zero2.json": (2, "none", None),
    "zero3.json": (3, "none", "none"),
    "zero3_offload.json": (3, "cpu", "cpu"),
}
#: what each training config is for (the fields docs/training.md describes)
TRAIN_EXPECTED = {
    "llava_ov_7b_aot_lora.yaml": dict(
        model="lmms-lab/llava-onevision-qwen2-7b-ov", compression="paper_ov_10pct",
        deepspeed="configs/deepspeed/zero2.json", parts=["mm_mlp_adapter", "mm_language_model"],
        lora=True, frames=32, bf16=True, gradient_checkpointing=True,
    ),
    "llava_ov_7b_aot_full.yaml": dict(
        model="lmms-lab/llava-onevision-qwen2-7b-ov", compression="paper_ov_10pct",
        deepspeed="configs/deepspeed/zero3.json", parts=["mm_vision_tower", "mm_mlp_adapter", "mm_language_model"],
        lora=False, frames=32, bf16=True, gradient_checkpointing=True, mm_vision_tower_lr=2e-6,
    ),
    "llava_video_7b_aot_lora.yaml": dict(
        model="lmms-lab/LLaVA-Video-7B-Qwen2", compression="video_25pct",
        deepspeed="configs/deepspeed/zero3_offload.json", parts=["mm_mlp_adapter", "mm_language_model"],
        lora=True, frames=64, bf16=True, gradient_checkpointing=True,
        mm_spatial_pool_mode="average", mm_newline_position="grid", force_sample=True, add_time_instruction=True,
    ),
    "tiny_cpu.yaml": dict(
        model="runs/train/tiny-llava-ov", compression="paper_ov_10pct", deepspeed="configs/deepspeed/zero2.json",
        parts=["mm_mlp_adapter", "mm_language_model"], lora=False, frames=8, bf16=False, use_cpu=True,
        ddp_backend="gloo", max_steps=2, per_device_train_batch_size=2, learning_rate=1e-4, save_steps=1,
        report_to=[], data_path="runs/train/tiny_data.json", video_folder="runs/train/videos",
        dataloader_num_workers=0, logging_steps=1,
    ),
}


def _needs_train_extra():
    for module in ("deepspeed", "accelerate"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs the train extra ({module}): pip install -e '.[train]'")


# ---------------------------------------------------------------------------------- DeepSpeed JSONs


def test_every_deepspeed_config_is_known():
    assert sorted(p.name for p in DS_DIR.glob("*.json")) == sorted(DS_EXPECTED)


@pytest.mark.parametrize("name", sorted(DS_EXPECTED))
def test_deepspeed_config(name):
    cfg = json.loads((DS_DIR / name).read_text())
    stage, optimizer_device, param_device = DS_EXPECTED[name]
    zero = cfg["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == optimizer_device
    if param_device is None:
        assert "offload_param" not in zero
    else:
        assert zero["offload_param"]["device"] == param_device
    for section in ("offload_optimizer", "offload_param"):
        if zero.get(section, {}).get("device") == "cpu":
            assert zero[section]["pin_memory"] is True
    if stage == 2:
        assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
        assert zero["allgather_bucket_size"] > 0 and zero["reduce_bucket_size"] > 0
    else:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # save_model writes full weights
        for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
            assert zero[key] == "auto", f"{key}: Hugging Face fills it from the model's hidden size"
    # Hugging Face fills these from TrainingArguments, so the YAML flags are the only source
    assert cfg["fp16"]["enabled"] == "auto" and cfg["bf16"]["enabled"] == "auto"
    for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert cfg[key] == "auto", key
    # no optimizer / scheduler: the Trainer builds its own torch ones (per-part learning rates, CPU runs)
    assert "optimizer" not in cfg and "scheduler" not in cfg
    assert cfg["zero_allow_untested_optimizer"] is True


@pytest.mark.parametrize("name", sorted(DS_EXPECTED))
def test_deepspeed_config_is_valid_for_deepspeed(name):
    """DeepSpeed's own schema (it forbids unknown keys): a misspelt key fails here, not on the cluster."""
    _needs_train_extra()
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = json.loads((DS_DIR / name).read_text())["zero_optimization"]
    parsed = DeepSpeedZeroConfig(**{k: (10**6 if v == "auto" else v) for k, v in zero.items()})
    assert parsed.stage == DS_EXPECTED[name][0]
    if parsed.stage == 3:
        assert parsed.gather_16bit_weights_on_model_save is True


# ---------------------------------------------------------------------------------- train YAMLs


def test_every_train_config_is_known():
    assert TRAIN_CONFIGS == sorted(TRAIN_EXPECTED)


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_train_config_opens_with_its_command(name):
    text = (TRAIN_DIR / name).read_text()
    assert text.startswith("#"), "every train config opens with a comment saying what it trains"
    header = text.split("\n\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    launch = [line for line in header.splitlines() if f"configs/train/{name}" in line]
    assert launch, "the opening comment gives the command that launches the config"
    assert any("bash scripts/train/finetune" in line or "-m llava.train.train" in line for line in launch)
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    assert all(not isinstance(v, (list, dict)) for v in data.values()), "a flat mapping of flags"
    assert data["output_dir"] == f"runs/train/{Path(name).stem}"


@pytest.mark.parametrize("name", sorted(set(TRAIN_CONFIGS) - {"tiny_cpu.yaml"}))
def test_commands_in_the_header_run(name):
    """The launcher lines of the opening comment, run with DRY_RUN=1, print a torchrun command."""
    header = (TRAIN_DIR / name).read_text().split("\n\n")[0]
    lines = [line.lstrip("# ").split("  #")[0].strip() for line in header.splitlines()]   # trailing comments off
    commands = [line for line in lines if "bash scripts/train/" in line and not line.startswith("DRY_RUN")]
    assert commands
    for line in commands:
        words = shlex.split(line)
        at = words.index("bash")
        env = dict(word.split("=", 1) for word in words[:at])   # NUM_GPUS=8 NNODES=2 ...
        script, args = Path(words[at + 1]).name, words[at + 2 :]
        proc = _script(script, *args, DRY_RUN="1", **env)
        assert proc.returncode == 0, proc.stderr
        assert f"-m llava.train.train configs/train/{name}" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PARSE_ALL = r"""
import json, sys
from transformers.utils import is_torch_bf16_gpu_available
from llava.train.arguments import parse_args

out, configs = {}, json.loads(sys.argv[1])
for key, argv in configs.items():
    if "tiny_cpu" not in argv[0] and not is_torch_bf16_gpu_available():
        argv = argv + ["--use_cpu", "true"]   # bf16 configs parse on a machine without a bf16 GPU
    m, d, t = parse_args(argv)
    out[key] = dict(
        model=m.model_name_or_path, compression=m.compression, parts=m.tunable_parts(), lora=t.lora_enable,
        lora_r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, frames=d.frames_upbound,
        deepspeed=t.deepspeed, bf16=t.bf16, gradient_checkpointing=bool(t.gradient_checkpointing),
        use_cpu=t.use_cpu, ddp_backend=t.ddp_backend, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size, learning_rate=t.learning_rate,
        mm_projector_lr=t.mm_projector_lr, mm_vision_tower_lr=t.mm_vision_tower_lr, save_steps=t.save_steps,
        report_to=t.report_to, output_dir=t.output_dir, data_path=d.data_path, video_folder=d.video_folder,
        dataloader_num_workers=t.dataloader_num_workers, logging_steps=t.logging_steps, warmup_steps=t.warmup_steps,
        lr_scheduler_type=str(getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type)),
        num_train_epochs=t.num_train_epochs, model_max_length=t.model_max_length,
        mm_spatial_pool_mode=m.mm_spatial_pool_mode, mm_newline_position=m.mm_newline_position,
        force_sample=d.force_sample, add_time_instruction=d.add_time_instruction,
        micro_batch=t.hf_deepspeed_config.config["train_micro_batch_size_per_gpu"],
        zero_stage=t.hf_deepspeed_config.config["zero_optimization"]["stage"],
    )
print("PARSED " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """Every train config through ``parse_args([yaml, "--output_dir", tmp])``, in a child process.

    The child sees the single-process world ``llava.train.train`` describes to DeepSpeed (RANK=0,
    WORLD_SIZE=1, ...): with ``use_cpu`` and ``ddp_backend gloo`` the arguments open a gloo process
    group of one, which must not live in the test process.
    """
    _needs_train_extra()
    out = tmp_path_factory.mktemp("parsed")
    configs = {name: [str(TRAIN_DIR / name), "--output_dir", str(out / name)] for name in TRAIN_CONFIGS}
    configs["override"] = [str(TRAIN_DIR / "tiny_cpu.yaml"), "--output_dir", str(out / "o"), "--max_steps", "3",
                           "--learning_rate", "5e-5", "--compression", "none", "--lora_enable", "true"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "LOCAL_", "MASTER_"))}
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _PARSE_ALL, json.dumps(configs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PARSED ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("PARSED "):])


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_train_config_parses(parsed, name):
    """Flags known, types right, the DeepSpeed file and the compression preset resolve (the hub ids and
    data paths of the real configs are not touched by parse_args)."""
    got = parsed[name]
    for key, value in TRAIN_EXPECTED[name].items():
        assert got[key] == value, f"{name}: {key}"
    assert got["zero_stage"] == DS_EXPECTED[Path(got["deepspeed"]).name][0]
    assert got["micro_batch"] == got["per_device_train_batch_size"], "DeepSpeed's 'auto' batch filled from the flags"
    if got["lora"]:
        assert (got["lora_r"], got["lora_alpha"], got["lora_dropout"]) == (64, 16, 0.05)


@pytest.mark.parametrize("name", sorted(set(TRAIN_CONFIGS) - {"tiny_cpu.yaml"}))
def test_real_configs_follow_llava_next(parsed, name):
    got = parsed[name]
    assert got["learning_rate"] == (1e-4 if got["lora"] else 1e-5)
    if got["lora"]:
        assert got["mm_projector_lr"] == 2e-5
    assert got["warmup_steps"] == 0.03 and got["lr_scheduler_type"] == "cosine"  # from warmup_ratio
    assert got["num_train_epochs"] == 1 and got["per_device_train_batch_size"] == 1
    assert got["model_max_length"] == 32768 and got["logging_steps"] == 1
    assert got["report_to"] == ["wandb"]
    assert Path(got["output_dir"]).name == name, "--output_dir given on the command line wins over the YAML"


def test_later_flags_override_the_yaml(parsed):
    got = parsed["override"]
    assert (got["max_steps"], got["learning_rate"], got["compression"], got["lora"]) == (3, 5e-5, "none", True)
    assert got["frames"] == 8 and got["deepspeed"] == "configs/deepspeed/zero2.json"


@pytest.mark.parametrize("content", [
    '{"zero_optimization": {"stage": 2,}}',       # trailing comma
    '// ZeRO-2\n{"zero_optimization": {}}',      # a comment
    "stage: 2",                                    # YAML
])
def test_deepspeed_file_that_does_not_parse(tmp_path, content):
    bad = tmp_path / "my_zero.json"
    bad.write_text(content)
    with pytest.raises(ValueError, match=r"--deepspeed .*my_zero\.json: not valid JSON"):
        parse_args([str(TRAIN_DIR / "tiny_cpu.yaml"), "--output_dir", str(tmp_path), "--deepspeed", str(bad)])


def test_deepspeed_file_missing_or_without_zero(tmp_path):
    with pytest.raises(ValueError, match=r"--deepspeed .*nowhere\.json: no such file"):
        parse_args([str(TRAIN_DIR / "tiny_cpu.yaml"), "--output_dir", str(tmp_path),
                    "--deepspeed", str(tmp_path / "nowhere.json")])
    plain = tmp_path / "plain.json"
    plain.write_text('{"train_batch_size": "auto"}')
    with pytest.raises(ValueError, match=r"plain\.json: expected a JSON object with a 'zero_optimization' section"):
        parse_args([str(TRAIN_DIR / "tiny_cpu.yaml"), "--output_dir", str(tmp_path), f"--deepspeed={plain}"])


# ---------------------------------------------------------------------------------- launchers


def _script(name: str, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    names = ("DRY_RUN", "NUM_GPUS", "PYTHON", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
             "CUDA_VISIBLE_DEVICES")
    full_env = {k: v for k, v in os.environ.items() if k not in names}
    full_env.update(env)
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env=full_env, capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=60)


@pytest.mark.parametrize("name", ["finetune.sh", "finetune_multinode.sh"])
def test_scripts_open_with_their_commands(name):
    text = (SCRIPTS / name).read_text()
    header = text.split("set -euo pipefail")[0]
    assert text.startswith("#!/usr/bin/env bash\n#")
    assert f"bash scripts/train/{name} configs/train/" in header and "DRY_RUN=1" in header and "PYTHON=" in header
    if name == "finetune_multinode.sh":
        assert all(v in header for v in ("NNODES=2", "NODE_RANK=0", "NODE_RANK=1", "MASTER_ADDR=", "MASTER_PORT="))
    assert "set -euo pipefail" in text


def test_finetune_dry_run(tmp_path):
    proc = _script("finetune.sh", "configs/train/llava_ov_7b_aot_lora.yaml", "--max_steps", "3",
                   DRY_RUN="1", NUM_GPUS="8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (".venv/bin/python -m torch.distributed.run --nproc_per_node 8 -m llava.train.train "
                                   "configs/train/llava_ov_7b_aot_lora.yaml --max_steps 3")
    # from another folder, with an interpreter, a port and a flag value that needs quoting
    proc = _script("finetune.sh", str(TRAIN_DIR / "tiny_cpu.yaml"), "--run_name", "my run", cwd=tmp_path,
                   DRY_RUN="1", NUM_GPUS="2", PYTHON="/opt/py/bin/python", MASTER_PORT="29611")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == [
        "/opt/py/bin/python", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29611",
        "-m", "llava.train.train", "configs/train/tiny_cpu.yaml", "--run_name", "my run",
    ]
    # a config outside the repository keeps its absolute path
    mine = tmp_path / "mine.yaml"
    mine.write_text((TRAIN_DIR / "tiny_cpu.yaml").read_text())
    proc = _script("finetune.sh", str(mine), DRY_RUN="1", NUM_GPUS="1")
    assert shlex.split(proc.stdout)[-1] == str(mine.resolve())


def test_finetune_default_gpu_count():
    proc = _script("finetune.sh", "configs/train/tiny_cpu.yaml", DRY_RUN="1", CUDA_VISIBLE_DEVICES="0,1,2")
    assert "--nproc_per_node 3 " in proc.stdout, proc.stderr


def test_multinode_dry_run():
    env = dict(DRY_RUN="1", NNODES="2", NODE_RANK="1", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500", NUM_GPUS="8")
    proc = _script("finetune_multinode.sh", "configs/train/llava_ov_7b_aot_full.yaml", "--max_steps", "3", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        ".venv/bin/python -m torch.distributed.run --nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29500 "
        "--nproc_per_node 8 -m llava.train.train configs/train/llava_ov_7b_aot_full.yaml --max_steps 3"
    )
    env.pop("MASTER_PORT")
    proc = _script("finetune_multinode.sh", "configs/train/llava_ov_7b_aot_full.yaml", **env)
    assert "--master_port 29500 " in proc.stdout, proc.stderr


@pytest.mark.parametrize("name", ["finetune.sh", "finetune_multinode.sh"])
def test_missing_config_fails_clearly(name):
    env = dict(NUM_GPUS="8", NNODES="2", NODE_RANK="0", MASTER_ADDR="10.0.0.1", PYTHON="false")
    proc = _script(name, "configs/train/nope.yaml", "--max_steps", "3", **env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "train config 'configs/train/nope.yaml': no such file" in proc.stderr
    proc = _script(name, "configs/deepspeed/zero2.json", **env)
    assert proc.returncode == 2 and "is not a .yaml/.yml file" in proc.stderr
    proc = _script(name, **env)
    assert proc.returncode == 2 and "usage:" in proc.stderr


@pytest.mark.parametrize(("env", "message"), [
    (dict(NODE_RANK="0", MASTER_ADDR="10.0.0.1"), "NNODES is not set"),
    (dict(NNODES="2", MASTER_ADDR="10.0.0.1"), "NODE_RANK is not set"),
    (dict(NNODES="2", NODE_RANK="0"), "MASTER_ADDR is not set"),
    (dict(NNODES="2", NODE_RANK="2", MASTER_ADDR="10.0.0.1"), "NODE_RANK=2; expected an integer in 0 .. 1"),
    (dict(NNODES="two", NODE_RANK="0", MASTER_ADDR="10.0.0.1"), "NNODES=two; expected a positive integer"),
])
def test_multinode_needs_its_environment(env, message):
    proc = _script("finetune_multinode.sh", "configs/train/llava_ov_7b_aot_full.yaml", DRY_RUN="1", NUM_GPUS="8", **env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr


def test_bad_gpu_count():
    proc = _script("finetune.sh", "configs/train/tiny_cpu.yaml", DRY_RUN="1", NUM_GPUS="0")
    assert proc.returncode == 2 and "NUM_GPUS=0; expected a positive integer" in proc.stderr
