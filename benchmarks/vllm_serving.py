"""Serving benchmark: vLLM's OpenAI-compatible server, stock and with this project's plugin, one server per
setting, under a bounded load of video chat requests.

Each setting gets its own server, started here as a subprocess (``--python``, default ``.venv-vllm``),
one at a time: wait for ``GET /health``, read the model id (``GET /v1/models``), count the prompt's
tokens (``POST /tokenize``), send ``--warmup`` requests one by one (not counted), then ``--requests``
requests at ``--concurrency`` in flight; the loop ends by itself and the server is terminated. Settings:

* ``stock``: vLLM as installed, no ``--hf-overrides``;
* a plugin spec (``none``, ``aot@0.25``, ``evs@0.1``, ``vidcom2@0.25``, ... any spec the plugin takes):
  ``--hf-overrides '{"aot": "<spec>"}'``; ``none`` is the plugin's path with nothing reduced, and
  ``evs@<r>`` / ``vidcom2@<r>`` are vLLM's own masks run through the plugin's path;
* ``stock-evs@<r>``: vLLM's own EVS, ``--video-pruning-rate 1 - r``. On the CPU backend it fails at the
  first video request (in ``_merge_multimodal_embeddings``: ``shape mismatch: value tensor of shape
  [N, D + 4] cannot be broadcast to indexing result of shape [N, D]``, EVS's position channels left on);
  it is run anyway and its row reports the failure.

A setting whose server does not start, or whose requests fail, is a row with its failure count and the
first line of its first error (and, when the server's log holds a traceback, the root exception's line);
the benchmark goes on with the next setting. It reports figures only: nothing is graded or asserted.

Requests: ``POST /v1/chat/completions`` with one ``video_url`` (``file://``) and ``--prompt``,
temperature 0, ``max_tokens`` = ``--max-tokens`` with ``ignore_eos`` (every request decodes the same
number of tokens, whatever a setting makes the model say), streamed with
``stream_options.include_usage``. Every request, warm-ups included, names its video with a ``uuid`` of
its own, so no request reuses another's processed video, encoder output or prefix cache: each one
decodes, preprocesses and encodes its video as distinct videos would be.

Per row:

* **video tokens**: the ``<|video_pad|>`` tokens in the prompt vLLM builds, as ``/tokenize`` returns it
  for the request's messages (the processor's expansion, the plugin's count included); exact. **text
  tokens** = prompt tokens - video tokens (the same for every setting), **retention** = video tokens /
  the full count (the ``stock`` row's, else the ``none`` row's). **prompt tokens**: ``usage.prompt_tokens``
  of the measured requests (``/tokenize``'s count where none succeeded).
* **req/s**: successful requests / wall time of the measured loop (first send to last reply);
  **out tok/s**: their completion tokens / the same time.
* **TTFT**: from sending a request to the first chunk with generated content: text, or the first token's
  id (``return_token_ids``) where that token renders as no text (a random model's byte fragments);
  **latency**: to the stream's end. p50 is the median, p95 the 95th percentile by linear interpolation
  between order statistics (``statistics.quantiles``, ``inclusive``), over successful measured requests.
* **load** (JSON): CPU seconds of the server's processes, of this client and of everything else
  (``/proc/stat``) during the measured loop; a busy neighbour inflates the figures.

Without ``--model`` a scaled random-weight Qwen2.5-VL is written to ``--workdir``
(:func:`llava.fixtures.tiny_qwen2_5_vl.write_tiny_qwen2_5_vl`, LLM head size 64 / hidden 256: vLLM's CPU
attention needs a head size of at least 32) with frames up to 224 x 336 px; without ``--video``, a
synthetic clip (:func:`llava.video.write_synthetic_video`: 32 frames of 224 x 336 px at 4 fps, 8 s), which
vLLM's Qwen2.5-VL path serves as 8 temporal tokens (16 frames sampled) of 8 x 12 merged tokens: 768 video
tokens at full retention (the ``stock`` row's count is the one measured). Both are written by the Python
running this script (either environment has the package); ``--model`` and ``--video`` skip them.

On a CPU (default) servers get ``VLLM_TARGET_DEVICE=cpu``, ``VLLM_CPU_KVCACHE_SPACE`` (``--kv-cache-gib``,
GiB) and ``--enforce-eager``; always ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1`` (nothing is
downloaded: a hub id must already be in the local cache), ``--dtype``, ``--max-model-len``, ``--seed 0``
and ``--allowed-local-media-path`` (the video's folder). The HTTP client is the standard library's, so
the script runs under either environment; on a small machine the client's threads share the cores with
the server.

Commands::

    python -m benchmarks.vllm_serving                              # CPU: the scaled model, every setting
    python -m benchmarks.vllm_serving --settings stock,none,aot@0.25 --requests 8 --concurrency 2
    python -m benchmarks.vllm_serving --model CKPT --video clip.mp4 --json /tmp/serving.json

``--gpu``: on a CUDA machine, the 7B (no CPU variables, CUDA graphs left on; ``--python`` names a venv with
vLLM's CUDA build and this package, made as scripts/setup_vllm.sh says; the checkpoint must be in the
local Hugging Face cache or be a path)::

    python -m benchmarks.vllm_serving --gpu --model Qwen/Qwen2.5-VL-7B-Instruct --dtype bfloat16 \\
        --python /path/to/venv/bin/python --max-model-len 16384 --json runs/bench/vllm_serving_gpu.json

Prints a Markdown table and writes every number, each server's command line and log path, and the
environment (vLLM / torch / transformers versions, CPU and GPU, the model's config sizes, date) to
``--json`` (default ``runs/bench/vllm_serving.json``), atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DEFAULT_JSON = Path("runs/bench/vllm_serving.json")
DEFAULT_WORKDIR = Path("runs/bench/vllm_serving")
DEFAULT_PYTHON = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"
DEFAULT_SETTINGS = ("stock", "none", "aot@0.25", "aot@0.1", "evs@0.25", "evs@0.1", "vidcom2@0.25", "vidcom2@0.1",
                    "stock-evs@0.25")
DEFAULT_PROMPT = "Describe what happens in this video."
VIDEO_TOKEN = "<|video_pad|>"
#: the scaled model and synthetic clip (see the module docstring)
FIXTURE = {"head_dim": 64, "max_pixels": 224 * 336, "frames": 32, "size": (224, 336), "fps": 4}
#: exception lines that only point elsewhere (the root cause is an earlier line)
_WRAPPERS = re.compile(r"root cause|Engine core initialization failed|EngineDeadError|"
                       r"EngineCore encountered an issue|^SystemExit|^KeyboardInterrupt", re.IGNORECASE)
#: vLLM's log prefix: level, date, time, [file:line]
_LOG_PREFIX = re.compile(r"^(?:[A-Z]+\s+)?\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s*")
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception)\b(?::.*)?$")


# --------------------------------------------------------------------------------------------------
# settings


def server_args(setting: str) -> tuple[str, list[str]]:
    """The setting's label and the server arguments it adds."""
    if setting == "stock":
        return "stock vLLM", []
    if setting.startswith("stock-evs@"):
        retention = _retention(setting, setting.removeprefix("stock-evs@"))
        return f"vLLM's own EVS, {retention:.0%} kept", ["--video-pruning-rate", f"{1.0 - retention:g}"]
    overrides = ["--hf-overrides", json.dumps({"aot": setting})]
    name, _, value = setting.partition("@")
    if setting == "none":
        return "plugin, no reduction", overrides
    if not value:
        return f"plugin: {setting}", overrides
    retention = _retention(setting, value)
    what = {"aot": "AOT", "evs": "EVS mask via plugin", "vidcom2": "VidCom2 mask via plugin"}.get(name, name)
    return f"{what}, {retention:.0%} kept", overrides


def _retention(setting: str, value: str) -> float:
    try:
        retention = float(value)
    except ValueError:
        retention = -1.0
    if not 0.0 < retention <= 1.0:
        raise ValueError(f"setting {setting!r} is not valid; expected a retention in (0, 1] after '@'")
    return retention


# --------------------------------------------------------------------------------------------------
# fixtures and environment


def write_fixtures(workdir: Path, *, model: str | None, video: Path | None, seed: int) -> tuple[str, Path]:
    """The checkpoint and the video to serve: those given, else the scaled model and synthetic clip,
    written to ``workdir`` by this Python."""
    workdir.mkdir(parents=True, exist_ok=True)
    if model is None:
        from llava.fixtures.tiny_qwen2_5_vl import write_tiny_qwen2_5_vl

        model = str(write_tiny_qwen2_5_vl(workdir / "qwen2_5_vl_scaled", seed=seed, head_dim=FIXTURE["head_dim"],
                                          max_pixels=FIXTURE["max_pixels"]).resolve())
    if video is None:
        from llava.video import write_synthetic_video

        video = write_synthetic_video(workdir / "synthetic.mp4", frames=FIXTURE["frames"], size=FIXTURE["size"],
                                      fps=FIXTURE["fps"], seed=seed)
    return model, video.resolve()


_PROBE = r"""
import importlib.metadata as md, json, os, sys
model = sys.argv[1]
def version(*names):
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            pass
    return None
out = {"python": sys.version.split()[0], "vllm": version("vllm", "vllm-cpu"), "torch": version("torch"),
       "transformers": version("transformers")}
try:
    import torch
    out["cuda"] = torch.version.cuda
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as err:
    out["torch_error"] = f"{type(err).__name__}: {err}".splitlines()[0]
try:
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(model)
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "vocab_size", "max_position_embeddings")
    sizes = {"architectures": getattr(config, "architectures", None),
             "text": {k: getattr(text, k, None) for k in keys}}
    if sizes["text"]["head_dim"] is None and text.hidden_size and text.num_attention_heads:
        sizes["text"]["head_dim"] = text.hidden_size // text.num_attention_heads
    if vision is not None:
        sizes["vision"] = {k: getattr(vision, k, None) for k in ("depth", "hidden_size", "intermediate_size",
                           "num_heads", "out_hidden_size", "patch_size", "spatial_merge_size",
                           "temporal_patch_size", "window_size", "fullatt_block_indexes")}
    out["model_config"] = sizes
except Exception as err:
    out["model_config_error"] = f"{type(err).__name__}: {err}".splitlines()[0]
processor = {}
for name in ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json"):
    path = os.path.join(model, name)
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache
            path = try_to_load_from_cache(model, name)
        except Exception:
            path = None
    if isinstance(path, str) and os.path.isfile(path):
        data = json.load(open(path))
        for part in (data.get("video_processor", {}), data.get("image_processor", {}), data):
            for k in ("min_pixels", "max_pixels", "size", "fps", "patch_size", "merge_size", "temporal_patch_size"):
                if k in part and k not in processor:
                    processor[k] = part[k]
out["processor"] = processor
print("PROBE" + json.dumps(out))
"""


def environment(python: str, model: str, env: dict[str, str]) -> dict[str, Any]:
    """The client's machine and the server Python's versions, GPU and model config (read by a subprocess)."""
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "client_python": platform.python_version(),
        "server_python_path": python,
    }
    try:
        done = subprocess.run([python, "-c", _PROBE, model], capture_output=True, text=True, timeout=300, env=env)
        line = next((x for x in done.stdout.splitlines() if x.startswith("PROBE")), None)
        if line is None:
            info["probe_error"] = _root_error(done.stderr) or f"probe exited with {done.returncode}"
        else:
            info.update(json.loads(line.removeprefix("PROBE")))
    except (OSError, subprocess.TimeoutExpired) as err:
        info["probe_error"] = f"{type(err).__name__}: {err}".splitlines()[0]
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _clock_tick() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100.0


def _machine_busy_s() -> float | None:
    """CPU seconds every core spent busy since boot (``/proc/stat``: user, nice, system, irq, softirq; not
    idle, I/O wait or steal), None where it cannot be read."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (sum(fields[:7]) - fields[3] - fields[4]) / _clock_tick()


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds of the live processes in process group ``pgid`` (``/proc/<pid>/stat``)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 12 and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _clock_tick()


class LoadMonitor:
    """CPU time of the server's processes, of this client and of every other process over a span: a noisy
    neighbour inflates the figures."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.wall, self.busy, self.server = time.perf_counter(), _machine_busy_s(), _group_cpu_s(pgid)
        self.own = sum(os.times()[:2])

    def report(self) -> dict[str, float | None]:
        busy, server, own = _machine_busy_s(), _group_cpu_s(self.pgid) - self.server, sum(os.times()[:2]) - self.own
        other = None if busy is None or self.busy is None else max(busy - self.busy - server - own, 0.0)
        return {"wall_s": time.perf_counter() - self.wall, "server_cpu_s": server, "client_cpu_s": own,
                "other_cpu_s": other}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# server


class Server:
    """One vLLM OpenAI server in its own process group, its output in ``log``."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.command, self.log, self.port = command, log, port
        self.url = f"http://127.0.0.1:{port}"
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_healthy(self, timeout: float) -> str | None:
        """None once ``/health`` answers 200; else why not (the process's exit or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                error = _root_error(self.read_log())
                return f"server exited with {self.process.returncode}" + (f": {error}" if error else "")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return None
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        return f"no answer on /health within {timeout:.0f} s"

    def read_log(self, start: int = 0) -> str:
        self._log_file.flush()
        try:
            with self.log.open("rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the server's process group (its engine processes too), SIGKILL after ``grace``."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        else:  # the server exited; children it left in its group go too
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log_file.close()


def _root_error(text: str) -> str | None:
    """The first exception line in ``text`` that is not a wrapper's pointing elsewhere (a traceback prints
    the chain's root first); the last wrapper's when there is nothing else."""
    lines = [re.sub(r"^\(\w+ pid=\d+\)\s*", "", x).strip() for x in text.splitlines()]
    lines = [_LOG_PREFIX.sub("", x) for x in lines]
    found = [x for x in lines if _EXCEPTION_LINE.match(x)]
    if not found:
        return None
    roots = [x for x in found if not _WRAPPERS.search(x)]
    return (roots[0] if roots else found[-1])[:400]


# --------------------------------------------------------------------------------------------------
# client


def _post(url: str, body: dict[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


def _get(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _http_error(err: BaseException) -> str:
    """The first line of an error: the server's message for an HTTP error, else the exception's."""
    if isinstance(err, urllib.error.HTTPError):
        try:
            body = json.loads(err.read())
            message = body.get("error", body)
            message = message.get("message", message) if isinstance(message, dict) else message
        except (ValueError, OSError, AttributeError):
            message = err.reason
        text = f"HTTP {err.code}: {message}"
    else:
        text = f"{type(err).__name__}: {err}"
    return (text.strip().splitlines() or [""])[0][:400]


def messages(video: Path, prompt: str, tag: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": video.as_uri()}, "uuid": tag},
        {"type": "text", "text": prompt},
    ]}]


def count_tokens(url: str, model_id: str, video: Path, prompt: str, timeout: float) -> dict[str, int]:
    """The prompt vLLM builds for the request: its length and its video placeholders."""
    body = {"model": model_id, "messages": messages(video, prompt, f"tokenize-{uuid.uuid4().hex}"),
            "add_generation_prompt": True, "return_token_strs": True}
    out = _post(url + "/tokenize", body, timeout)
    strs = out.get("token_strs") or []
    return {"prompt_tokens": int(out["count"]), "video_tokens": sum(1 for s in strs if s == VIDEO_TOKEN)}


def chat(url: str, model_id: str, video: Path, prompt: str, max_tokens: int, timeout: float) -> dict[str, Any]:
    """One streamed request: TTFT, latency (s), usage; ``error`` (first line) when it failed."""
    body = {"model": model_id, "messages": messages(video, prompt, uuid.uuid4().hex), "temperature": 0,
            "max_tokens": max_tokens, "ignore_eos": True, "return_token_ids": True, "stream": True,
            "stream_options": {"include_usage": True}}
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    out: dict[str, Any] = {"ttft_s": None, "latency_s": None, "prompt_tokens": None, "completion_tokens": None,
                           "ttft_basis": None, "error": None}
    first_choice = None
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            for raw in r:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    out["error"] = (str(message).strip().splitlines() or ["stream error"])[0][:400]
                    break
                now = time.perf_counter()
                choices = chunk.get("choices") or []
                if choices and first_choice is None:
                    first_choice = now - start
                if out["ttft_s"] is None:
                    if any((c.get("delta") or {}).get("content") for c in choices):
                        out["ttft_s"], out["ttft_basis"] = now - start, "content"
                    elif any(c.get("token_ids") for c in choices):
                        out["ttft_s"], out["ttft_basis"] = now - start, "token"
                usage = chunk.get("usage")
                if usage:
                    out["prompt_tokens"] = usage.get("prompt_tokens")
                    out["completion_tokens"] = usage.get("completion_tokens")
        out["latency_s"] = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - any failure of a request is a reported failure
        out["error"] = _http_error(err)
    if out["error"] is None and out["ttft_s"] is None:
        if first_choice is None:
            out["error"] = "the stream ended without a generated chunk"
        else:
            out["ttft_s"], out["ttft_basis"] = first_choice, "chunk"
    return out


# --------------------------------------------------------------------------------------------------
# one setting


def _ms(values: list[float], q: str) -> float | None:
    if not values:
        return None
    if q == "p50":
        return statistics.median(values) * 1e3
    if len(values) == 1:
        return values[0] * 1e3
    return statistics.quantiles(values, n=100, method="inclusive")[94] * 1e3


def run_setting(setting: str, args: argparse.Namespace, *, model: str, video: Path, env: dict[str, str],
                logs: Path) -> dict[str, Any]:
    label, extra = server_args(setting)
    port = args.port or _free_port()
    command = [args.python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--dtype", args.dtype, "--max-model-len", str(args.max_model_len),
               "--allowed-local-media-path", str(video.parent), "--seed", "0",
               *([] if args.gpu else ["--enforce-eager"]), *extra, *shlex.split(args.server_args)]
    safe = re.sub(r"[^\w.-]+", "_", setting)
    row: dict[str, Any] = {"setting": setting, "label": label, "server_command": shlex.join(command),
                           "server_log": str(logs / f"{safe}.log"), "status": "ok", "error": None,
                           "server_error": None, "startup_s": None, "requests": args.requests,
                           "concurrency": args.concurrency, "warmup": [], "failures": 0, "first_error": None}
    print(f"[{setting}] starting: {label}", flush=True)
    start = time.perf_counter()
    server = Server(command, env, logs / f"{safe}.log", port)
    try:
        why = server.wait_healthy(args.startup_timeout)
        if why is not None:
            row.update(status="server failed", error=why, failures=args.requests, first_error=why)
            print(f"[{setting}] server failed: {why}", flush=True)
            return row
        row["startup_s"] = time.perf_counter() - start
        timeout = args.request_timeout
        model_id = _get(server.url + "/v1/models", timeout)["data"][0]["id"]
        try:
            row.update(count_tokens(server.url, model_id, video, args.prompt, timeout))
        except Exception as err:  # noqa: BLE001 - reported, the requests still run
            row["tokenize_error"] = _http_error(err)
        log_mark = server.log_size()
        for _ in range(args.warmup):
            result = chat(server.url, model_id, video, args.prompt, args.max_tokens, timeout) if server.alive() \
                else {"error": f"server exited with {server.process.returncode}"}
            row["warmup"].append(result)

        def one(_: int) -> dict[str, Any]:
            if not server.alive():
                return {"error": f"server exited with {server.process.returncode}", "latency_s": None}
            return chat(server.url, model_id, video, args.prompt, args.max_tokens, timeout)

        print(f"[{setting}] up in {row['startup_s']:.0f} s; {args.requests} requests at concurrency "
              f"{args.concurrency}", flush=True)
        monitor = LoadMonitor(server.process.pid)
        loop_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - loop_start
        row["results"] = results
        row["wall_s"] = wall
        row["load"] = monitor.report()
        summarize(row, results, wall)
        warm_errors = [w["error"] for w in row["warmup"] if w.get("error")]
        if row["failures"] or warm_errors:
            row["status"] = "failed"
            row["first_error"] = row["first_error"] or warm_errors[0]
            row["server_error"] = _root_error(server.read_log(log_mark))
        print(f"[{setting}] {row['ok']} / {args.requests} ok in {wall:.1f} s", flush=True)
    except Exception as err:  # noqa: BLE001 - one setting's failure must not end the benchmark
        row.update(status="failed", error=_http_error(err), first_error=row["first_error"] or _http_error(err))
        row["server_error"] = _root_error(server.read_log())
        print(f"[{setting}] failed: {row['error']}", flush=True)
    finally:
        server.stop()
    return row


def summarize(row: dict[str, Any], results: list[dict[str, Any]], wall: float) -> None:
    ok = [r for r in results if r.get("error") is None]
    errors = [r["error"] for r in results if r.get("error") is not None]
    ttft = [r["ttft_s"] for r in ok]
    latency = [r["latency_s"] for r in ok]
    prompts = sorted({r["prompt_tokens"] for r in ok if r.get("prompt_tokens") is not None})
    completion = sum(r.get("completion_tokens") or 0 for r in ok)
    row.update(
        ok=len(ok), failures=len(errors), first_error=errors[0] if errors else None,
        prompt_tokens_seen=prompts, completion_tokens=completion,
        requests_per_s=len(ok) / wall if ok and wall > 0 else None,
        output_tokens_per_s=completion / wall if ok and wall > 0 else None,
        ttft_p50_ms=_ms(ttft, "p50"), ttft_p95_ms=_ms(ttft, "p95"),
        latency_p50_ms=_ms(latency, "p50"), latency_p95_ms=_ms(latency, "p95"),
        ttft_basis={b: sum(1 for r in ok if r.get("ttft_basis") == b) for b in ("content", "token", "chunk")},
    )
    if len(prompts) == 1:
        row["prompt_tokens"] = prompts[0]


def add_retention(rows: list[dict[str, Any]]) -> int | None:
    """Text tokens and retention per row against the full count (``stock``'s, else ``none``'s)."""
    full = next((r.get("video_tokens") for name in ("stock", "none") for r in rows
                 if r["setting"] == name and r.get("video_tokens")), None)
    for r in rows:
        if r.get("prompt_tokens") is not None and r.get("video_tokens") is not None:
            r["text_tokens"] = r["prompt_tokens"] - r["video_tokens"]
        r["retention"] = r["video_tokens"] / full if full and r.get("video_tokens") is not None else None
    return full


# --------------------------------------------------------------------------------------------------
# report

HEADER = ("| setting | label | video tokens | retention | prompt tokens | ok / sent | req/s | out tok/s | TTFT p50 ms "
          "| TTFT p95 ms | latency p50 ms | latency p95 ms | failures | first error |")


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in rows:
        error = r.get("server_error") or r.get("first_error") or ""
        if r.get("server_error") and r.get("first_error") and r["first_error"] not in r["server_error"]:
            error = f"{r['first_error']} (server: {r['server_error']})"
        error = error.replace("|", "\\|")
        sent = "n/a" if r["status"] == "server failed" else f"{r.get('ok', 0)} / {r['requests']}"
        lines.append(
            f"| {r['setting']} | {r['label']} | {_fmt(r.get('video_tokens'), 'd')} | {_fmt(r.get('retention'), '.3f')} "
            f"| {_fmt(r.get('prompt_tokens'), 'd')} | {sent} | {_fmt(r.get('requests_per_s'), '.2f')} "
            f"| {_fmt(r.get('output_tokens_per_s'), '.1f')} "
            f"| {_fmt(r.get('ttft_p50_ms'), '.0f')} | {_fmt(r.get('ttft_p95_ms'), '.0f')} "
            f"| {_fmt(r.get('latency_p50_ms'), '.0f')} | {_fmt(r.get('latency_p95_ms'), '.0f')} "
            f"| {r['failures']} | {error} |"
        )
    return "\n".join(lines)


def caption(env: dict[str, Any], settings: dict[str, Any]) -> str:
    sizes = (env.get("model_config") or {}).get("text") or {}
    where = f"GPU: {env['gpu']}" if env.get("gpu") else f"CPU: {env['cpu_count']} cores ({env['cpu_name']})"
    model = settings["model"] if not settings["scaled_model"] else (
        f"scaled random Qwen2.5-VL (LLM hidden {sizes.get('hidden_size')}, {sizes.get('num_hidden_layers')} layers, "
        f"head size {sizes.get('head_dim')})")
    return (f"{where}; vLLM {env.get('vllm')}, torch {env.get('torch')}, {settings['dtype']}; {model}; "
            f"{settings['requests']} requests at concurrency {settings['concurrency']} after {settings['warmup']} "
            f"warm-up, {settings['max_tokens']} output tokens each; full video: "
            f"{_fmt(settings['full_video_tokens'], 'd')} tokens")


def write_json(path: Path, report: dict[str, Any]) -> None:
    """``report`` as JSON at ``path``, atomically (a temporary file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it (mkstemp's file is private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {path}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected an integer >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected an integer >= 0")
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vllm_serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help="comma-separated: stock, stock-evs@<r>, or a plugin spec (none, aot@<r>, evs@<r>, "
                             f"vidcom2@<r>, ...); default {','.join(DEFAULT_SETTINGS)}")
    parser.add_argument("--model", default=None, help="checkpoint (path or cached hub id); default: the scaled model, "
                                                      "written to --workdir")
    parser.add_argument("--video", type=Path, default=None, help="video file; default: a synthetic clip in --workdir")
    parser.add_argument("--python", default=str(DEFAULT_PYTHON),
                        help=f"Python with vLLM and this package, to run the servers (default {DEFAULT_PYTHON})")
    parser.add_argument("--requests", type=_positive_int, default=24, help="measured requests per setting (24)")
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="requests in flight (4)")
    parser.add_argument("--warmup", type=_non_negative_int, default=2,
                        help="requests sent one by one before the measured ones, not counted (2)")
    parser.add_argument("--max-tokens", type=_positive_int, default=16, help="output tokens per request (16)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the text after the video")
    parser.add_argument("--dtype", default="float32", help="server --dtype (float32; bfloat16 on a GPU)")
    parser.add_argument("--max-model-len", type=_positive_int, default=4096, help="server --max-model-len (4096)")
    parser.add_argument("--kv-cache-gib", type=_positive_int, default=1, help="VLLM_CPU_KVCACHE_SPACE on a CPU (1)")
    parser.add_argument("--gpu", action="store_true",
                        help="serve on the GPU: no CPU variables, no --enforce-eager")
    parser.add_argument("--server-args", default="", help="more server arguments, one shell-quoted string")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one per server)")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds a server may take to start")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds a request may take")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scaled model and the synthetic clip")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"scaled model, synthetic clip and server logs (default {DEFAULT_WORKDIR})")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output JSON (default {DEFAULT_JSON})")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the caption and table here")
    args = parser.parse_args(argv)

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if not settings:
        parser.error("--settings: expected at least one setting")
    try:
        for s in settings:
            server_args(s)
    except ValueError as err:
        parser.error(str(err))
    if not Path(args.python).exists():
        parser.error(f"--python {args.python}: no such file")
    if args.video is not None and not args.video.is_file():
        parser.error(f"--video {args.video}: no such file")

    started = time.perf_counter()
    model, video = write_fixtures(args.workdir, model=args.model, video=args.video, seed=args.seed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not args.gpu:
        env.update(VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE=str(args.kv_cache_gib))
    info = environment(args.python, model, env)
    info["server_env"] = {k: env[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_TARGET_DEVICE",
                                              "VLLM_CPU_KVCACHE_SPACE") if k in env}
    logs = args.workdir / "logs"
    rows = []
    for setting in settings:
        rows.append(run_setting(setting, args, model=model, video=video, env=env, logs=logs))
    full = add_retention(rows)
    run = {"settings": settings, "model": model, "scaled_model": args.model is None, "video": str(video),
           "synthetic_video": args.video is None, "fixture": FIXTURE if args.model is None or args.video is None
           else None, "requests": args.requests, "concurrency": args.concurrency, "warmup": args.warmup,
           "max_tokens": args.max_tokens, "prompt": args.prompt, "dtype": args.dtype,
           "max_model_len": args.max_model_len, "gpu": args.gpu, "server_args": args.server_args,
           "seed": args.seed, "full_video_tokens": full, "wall_s": time.perf_counter() - started}
    text = caption(info, run) + "\n\n" + table(rows)
    print()
    print(text)
    print()
    loads = [r["load"] for r in rows if r.get("load") and r["load"]["other_cpu_s"] is not None]
    if loads:
        print(f"other processes used {sum(x['other_cpu_s'] for x in loads):.1f} CPU-s during the measured loops "
              f"({sum(x['wall_s'] for x in loads):.0f} s of wall time, {os.cpu_count()} cores)")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    report = {"environment": info, "run": run, "rows": rows}
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
