"""Run vLLM's offline ``LLM`` on one prompt and one decoded video, once per setting, and write JSON.

Runs inside .venv-vllm (``.venv-vllm/bin/python tests/vllm_offline.py job.json out.json``), started by
tests/test_vllm_plugin.py, whose transformers oracle runs in .venv on the same frames. The job:
``{"model", "frames" (.npy, (F, H, W, 3) uint8), "fps", "prompt", "max_tokens", "settings": [spec or null]}``;
null is stock vLLM (no ``aot`` key). Each result: the prompt's token ids, the generated ids and text, and
the top-20 log-probabilities of the first generated token.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(job_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams

    job = json.loads(open(job_path).read())
    frames = np.load(job["frames"])
    fps = float(job["fps"])
    metadata = {"fps": fps, "duration": len(frames) / fps, "total_num_frames": len(frames),
                "frames_indices": list(range(len(frames))), "video_backend": "opencv", "do_sample_frames": False}
    results = []
    for spec in job["settings"]:
        overrides = {} if spec is None else {"aot": spec}
        llm = LLM(model=job["model"], hf_overrides=overrides, dtype="float32", max_model_len=2048,
                  enforce_eager=True, limit_mm_per_prompt={"video": 1, "image": 0}, seed=0)
        params = SamplingParams(temperature=0.0, max_tokens=int(job["max_tokens"]), logprobs=20)
        [out] = llm.generate({"prompt": job["prompt"], "multi_modal_data": {"video": [(frames, metadata)]}}, params)
        first = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
        results.append({
            "setting": spec, "prompt_token_ids": list(out.prompt_token_ids),
            "output_token_ids": list(out.outputs[0].token_ids), "text": out.outputs[0].text,
            "first_logprobs": {str(k): float(v.logprob) for k, v in first.items()},
        })
        del llm
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
