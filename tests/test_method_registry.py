"""The method registry from a user's side: a method added outside visionzip (tests/toy_method.py) is
listed, resolves from ``"<name>@<retention>"`` and YAML, and runs through ``aot sweep`` next to the
built-in ones; the built-ins are registered the same way."""

from __future__ import annotations

import json

import pytest
import torch
import toy_method as toy

import visionzip as vz


def test_builtins_are_registered_methods():
    """The registry is the only list of methods: each name's spec, config class and back."""
    names = vz.list_methods()
    assert names == sorted(names)
    assert {"aot", "full", "pool", "random", "visionzip", "dycoke", "fastvid"} <= set(names)
    for name in ("aot", "full", "pool", "random", "visionzip", "dycoke", "fastvid"):
        spec = vz.get_method(name)
        assert spec.name == name and spec.config_class.method_name() == name
        assert issubclass(spec.config_class, vz.MethodConfig)
        cfg = vz.make_config(name, None if name in ("full", "aot") else 0.2)
        assert cfg.method == name and vz.method_of(cfg) is spec


def test_a_registered_method_resolves_everywhere(tmp_path):
    assert toy.NAME not in vz.list_methods()
    with toy.registered():
        assert toy.NAME in vz.list_methods()
        cfg = vz.load_config("every_other@0.25")
        assert isinstance(cfg, toy.EveryOtherConfig) and cfg.step == 4
        path = tmp_path / "toy.yaml"
        cfg.to_yaml(path)
        assert vz.load_config(str(path)) == cfg
        layout = vz.VideoLayout(frames=4, grid=(6, 6), pool_mode="average")
        x, s = torch.randn(4, 36, 8), torch.rand(4, 36)
        res = vz.compress_video(x, None, s, config=cfg, layout=layout)
        assert res.num_tokens == 4 * 3 and torch.equal(res.plan.apply(x), res.tokens)
        with pytest.raises(ValueError, match="deep_scores is None .*expected .*'every_other' reads them"):
            vz.compress_video(x, None, None, config=cfg, layout=layout)
    assert toy.NAME not in vz.list_methods()
    with pytest.raises(ValueError, match="'every_other' is not registered; expected one of"):
        vz.load_config("every_other@0.25")


def test_registration_errors():
    with pytest.raises(ValueError, match="already registered"):
        vz.register_method(vz.MethodSpec("aot", vz.AOTConfig, lambda videos, cfg: [], scores="none"))
    with pytest.raises(ValueError, match="declares _METHOD"):
        vz.MethodSpec("other", toy.EveryOtherConfig, toy.SPEC.compress)
    with pytest.raises(ValueError, match="scores='all' is not valid"):
        vz.MethodSpec(toy.NAME, toy.EveryOtherConfig, toy.SPEC.compress, scores="all")  # type: ignore[arg-type]


def test_toy_method_through_aot_sweep(tmp_path):
    pytest.importorskip("lmms_eval")
    from llava.eval import sweep

    out = tmp_path / "sweep"
    with toy.registered():
        assert toy.NAME in sweep.available_methods()
        code = sweep.main(["--methods", toy.NAME, "--retentions", "0.25", "--limit", "2", "--batch-size", "2",
                           "--device", "cpu", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "sweep.json").read_text())
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == {"full", toy.NAME}
    run = runs[toy.NAME]
    assert not run["failed"] and run["samples"] == 2 and run["failed_samples"] == 0
    assert run["retention"] == pytest.approx(0.25, abs=0.01)  # every 4th cell of 14x14 = 49 of 196
    assert toy.NAME in (out / "sweep.md").read_text()


def test_a_method_that_reads_the_question_gets_it_through_generate(tmp_path):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.fixtures.tiny_checkpoint import write_tiny_checkpoint
    from llava.model.builder import load_pretrained_model
    from llava.video import load_video, write_synthetic_video

    seen = []

    def select(pooled, video, cfg, budget):
        seen.append(video.question)
        return toy.select(pooled, video, cfg, budget)

    spec = vz.MethodSpec(toy.NAME, toy.EveryOtherConfig, vz.compress_on_grid(select), scores="deep",
                         reads_question=True, make_config=toy.make_config)
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")
    tok, model, processor, _ = load_pretrained_model(
        str(ckpt), None, "llava_qwen", device_map=None, torch_dtype="float32", attn_implementation="sdpa"
    )
    video = write_synthetic_video(tmp_path / "v.mp4", frames=16, seed=2)
    pixels = processor.preprocess(load_video(video, max_frames=8).frames, return_tensors="pt")["pixel_values"]
    ids = torch.tensor([tok("<|im_start|>user\n").input_ids + [IMAGE_TOKEN_INDEX] + tok("\nWhat moves?").input_ids])
    vz.register_method(spec)
    try:
        model.set_compression("every_other@0.5")
        with torch.no_grad():
            model.generate(ids, images=[pixels], modalities=["video"], questions=["What moves?"], max_new_tokens=1)
            model.generate(ids, images=[pixels], modalities=["video"], max_new_tokens=1)
    finally:
        vz.unregister_method(toy.NAME)
    assert seen == ["What moves?", None]
