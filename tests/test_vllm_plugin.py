"""The vLLM plugin (llava/serving) through vLLM's own entry points, on CPU, with a tiny random-weight
Qwen2.5-VL (LLM head size 32, which vLLM's CPU attention needs) the servers have never seen.

- The OpenAI server (``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1, from .venv-vllm),
  one per setting, each shared by the tests of this module: stock vLLM, ``{"aot": "none"}`` and
  ``{"aot": "aot@0.25"}``. Six concurrent video requests are answered; the video's share of
  ``usage.prompt_tokens`` is the plan's share of stock vLLM's; ``none`` answers as stock, token for
  token; a request for a missing video fails alone (vLLM's own HTTP 500, "No such file or directory")
  and the next one is answered.
- Offline ``LLM`` (tests/vllm_offline.py, in .venv-vllm) against this project's transformers path (in
  .venv) on the same weights and frames, float32: the same prompt length and the first token's
  log-probabilities within ``LOGPROB_TOL``; the greedy answer equal wherever the transformers path's
  top-2 margin at each step exceeds that tolerance (random weights leave near ties that vLLM's CPU kernels
  may break the other way).

Every test skips where .venv-vllm is missing (``bash scripts/setup_vllm.sh`` makes it; CI does).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
#: |log p| differences of the first generated token between vLLM's CPU kernels and transformers, float32
LOGPROB_TOL = 5e-3
PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
          "<|vision_start|><|video_pad|><|vision_end|>What happens in the video?<|im_end|>\n"
          "<|im_start|>assistant\n")

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: bash scripts/setup_vllm.sh")


def vllm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="2", VLLM_LOGGING_LEVEL="WARNING", TOKENIZERS_PARALLELISM="false")
    return env


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl
    from llava.video import synthetic_frame, write_synthetic_video

    folder = tmp_path_factory.mktemp("vllm")
    ckpt = write_tiny_qwen2_5_vl(folder / "tiny-qwen2.5-vl", seed=3, head_dim=32)
    frames = np.stack([synthetic_frame(i, frames=8, size=(112, 168), seed=1, scene_cut=True) for i in range(8)])
    np.save(folder / "frames.npy", frames)
    clip = write_synthetic_video(folder / "clip.mp4", frames=16, size=(112, 168), fps=4, seed=2)
    return {"ckpt": ckpt, "frames": folder / "frames.npy", "clip": clip, "folder": folder}


# ------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One OpenAI server from .venv-vllm on 127.0.0.1, started with ``extra`` arguments."""

    def __init__(self, ckpt: Path, media: Path, extra: list[str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(ckpt),
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--max-model-len", "2048",
               "--enforce-eager", "--allowed-local-media-path", str(media), "--seed", "0", *extra]
        # started outside the checkout, whose root may hold a stale aot_video.egg-info from an older install
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=vllm_env(),
                                     cwd=log.parent)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited ({self.proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server not up in 400 s:\n{log.read_text()[-4000:]}")

    def chat(self, video: Path | None, question: str = "What happens in the video?",
             max_tokens: int = 8) -> tuple[int, dict]:
        content = [] if video is None else [{"type": "video_url", "video_url": {"url": f"file://{video}"}}]
        body = {"model": self.model, "temperature": 0.0, "max_tokens": max_tokens, "seed": 0,
                "messages": [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/chat/completions",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    @property
    def model(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=10) as r:
            return json.loads(r.read())["data"][0]["id"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def served(assets):
    """The answers of each server to the same requests, one server at a time (two cores here)."""
    settings = {"stock": [], "none": ["--hf-overrides", '{"aot": "none"}'],
                "aot@0.25": ["--hf-overrides", '{"aot": "aot@0.25"}']}
    clip, folder = assets["clip"], assets["folder"]
    out = {}
    for name, extra in settings.items():
        server = Server(assets["ckpt"], folder, extra, folder / f"server-{name.replace('@', '_')}.log")
        try:
            with ThreadPoolExecutor(6) as pool:
                questions = [f"Question {i}: what happens?" for i in range(6)]
                concurrent = list(pool.map(server.chat, [clip] * 6, questions))
            text_only = [server.chat(None, f"Question {i}: what happens?") for i in range(6)]
            missing = server.chat(folder / "no-such-video.mp4")
            after = server.chat(clip, "Question 0: what happens?")
            alive = server.proc.poll() is None
        finally:
            server.stop()
        out[name] = {"concurrent": concurrent, "text_only": text_only, "missing": missing, "after": after,
                     "alive": alive}
    return out


def _prompt_tokens(answer: tuple[int, dict]) -> int:
    status, body = answer
    assert status == 200, body
    return int(body["usage"]["prompt_tokens"])


def _text(answer: tuple[int, dict]) -> str:
    return answer[1]["choices"][0]["message"]["content"]


def test_six_concurrent_video_requests_are_answered(served):
    for name, run in served.items():
        assert [status for status, _ in run["concurrent"]] == [200] * 6, name
        assert all(body["usage"]["completion_tokens"] >= 1 for _, body in run["concurrent"]), name


def test_none_answers_as_stock_vllm_token_for_token(served):
    stock, none = served["stock"], served["none"]
    for a, b in zip(stock["concurrent"] + [stock["after"]], none["concurrent"] + [none["after"]]):
        assert _text(a) == _text(b)
        assert a[1]["usage"] == b[1]["usage"]


def video_tokens(run: dict) -> list[int]:
    """Each request's video tokens: its prompt tokens less those of the same request without the video
    and the two that wrap the video's placeholders (<|vision_start|>, <|vision_end|>)."""
    return [_prompt_tokens(v) - _prompt_tokens(t) - 2 for v, t in zip(run["concurrent"], run["text_only"])]


def test_aot_quarter_keeps_a_quarter_of_the_video_tokens(served):
    stock, kept = video_tokens(served["stock"]), video_tokens(served["aot@0.25"])
    assert len(set(stock)) == 1 and stock[0] % (4 * 6) == 0  # whole temporal tokens of 4 x 6 merged cells
    assert [k / s for k, s in zip(kept, stock)] == [0.25] * 6


def test_a_missing_video_fails_alone_and_the_server_goes_on(served):
    for name, run in served.items():
        status, body = run["missing"]
        # vLLM's own error (it writes <path> for the file's name); this stock behaviour is kept
        assert 400 <= status < 600 and "No such file" in body["error"]["message"], (name, status, body)
        assert run["after"][0] == 200 and run["alive"], name


# ------------------------------------------------------------------------------------------- offline parity


@pytest.fixture(scope="module")
def offline(assets):
    settings = [None, "aot@0.25", "random@0.25", "evs@0.25"]
    job = {"model": str(assets["ckpt"]), "frames": str(assets["frames"]), "fps": 2.0, "prompt": PROMPT,
           "max_tokens": 6, "settings": settings}
    folder = assets["folder"]
    (folder / "job.json").write_text(json.dumps(job))
    run = subprocess.run([str(VLLM_PYTHON), str(ROOT / "tests" / "vllm_offline.py"), str(folder / "job.json"),
                          str(folder / "offline.json")], env={**vllm_env(), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
                         capture_output=True, text=True, timeout=900, cwd=folder)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return {r["setting"]: r for r in json.loads((folder / "offline.json").read_text())}


def transformers_run(assets, spec: str | None, steps: int) -> dict:
    """This project's transformers path on the same frames: prompt length, greedy ids, and at each step
    the log-probabilities and the top-2 margin."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    import visionzip
    from llava.model.qwen_vl.qwen2_5_vl import Qwen25VLCompression

    processor = AutoProcessor.from_pretrained(assets["ckpt"])
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(assets["ckpt"], dtype=torch.float32).eval()
    frames = np.load(assets["frames"])
    meta = {"fps": 2.0, "total_num_frames": len(frames), "frames_indices": list(range(len(frames)))}
    inputs = processor(text=[PROMPT], videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], video_metadata=[meta],
                       do_sample_frames=False, return_tensors="pt")
    config = None
    if spec is not None:
        config = visionzip.load_config(spec)
        if isinstance(config, visionzip.AOTConfig):  # as the plugin serves aot@r (llava/serving/plan.py)
            config = config.replace(keyframe_emit=visionzip.KeyframeEmit.MERGED_ONCE)
    seam = Qwen25VLCompression(model)
    seam.set_compression(config)
    prepared = seam.prepare(**inputs)
    embeds, positions = prepared["inputs_embeds"], prepared["position_ids"]
    ids, margins, first = [], [], None
    with torch.no_grad():
        for _ in range(steps):
            logits = model(inputs_embeds=embeds, position_ids=positions).logits[0, -1]
            logp = torch.log_softmax(logits.float(), -1)
            top = torch.topk(logp, 2)
            first = logp if first is None else first
            token = int(top.indices[0])
            ids.append(token)
            margins.append(float(top.values[0] - top.values[1]))
            embeds = torch.cat([embeds, model.get_input_embeddings()(torch.tensor([[token]]))], 1)
            positions = torch.cat([positions, positions[:, :, -1:] + 1], 2)
    return {"prompt_len": int(prepared["inputs_embeds"].shape[1]), "ids": ids, "margins": margins, "first": first}


@pytest.mark.parametrize("spec", [None, "aot@0.25", "random@0.25"])
def test_offline_llm_matches_the_transformers_path(offline, assets, spec):
    got = offline[spec]
    want = transformers_run(assets, spec, steps=len(got["output_token_ids"]))
    assert len(got["prompt_token_ids"]) == want["prompt_len"]
    for token, logprob in got["first_logprobs"].items():
        assert logprob == pytest.approx(float(want["first"][int(token)]), abs=LOGPROB_TOL), token
    for step, (a, b, margin) in enumerate(zip(got["output_token_ids"], want["ids"], want["margins"])):
        if margin <= LOGPROB_TOL:
            break  # a near tie: later tokens follow whichever way it broke
        assert a == b, (step, got["output_token_ids"], want["ids"], want["margins"])


def test_aot_quarter_offline_keeps_a_quarter_and_vllms_evs_runs_through_the_plugin(offline):
    full = len(offline[None]["prompt_token_ids"])
    video = 4 * 4 * 6  # 8 frames: 4 temporal tokens of 4 x 6 merged cells
    for spec in ("aot@0.25", "random@0.25", "evs@0.25"):
        kept = len(offline[spec]["prompt_token_ids"]) - (full - video)
        assert kept == video // 4, (spec, kept)
        assert offline[spec]["output_token_ids"], spec
