"""LLaVA-NeXT public API kept by ``llava``: constants, conversation templates, mm_utils, the tiny tokenizer."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, StoppingCriteriaList
from transformers.generation.stopping_criteria import MaxLengthCriteria

from llava import constants
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import (
    Conversation,
    SeparatorStyle,
    conv_default,
    conv_templates,
    default_conversation,
    get_conv_template,
)
from llava.fixtures.tiny_tokenizer import (
    QWEN2_PRETOKENIZE_REGEX,
    TINY_SPECIAL_TOKENS,
    TINY_TOKENIZER_CORPUS,
    build_tiny_tokenizer,
)
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    divide_to_patches,
    expand2square,
    get_anyres_image_grid_shape,
    get_model_name_from_path,
    process_anyres_image,
    process_images,
    resize_and_pad_image,
    select_best_resolution,
    tokenizer_image_token,
)

QWEN_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<image>\nQ<|im_end|>\n<|im_start|>assistant\n"
)
VICUNA_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "USER: <image>\nQ ASSISTANT:"
)
# As in lmms-lab/llava-onevision-qwen2-*-ov config.json: 36 pairs of multiples of 384 up to 2304.
OV_GRID_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tok(tiny_tok_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tok_dir))


def _prompt(name: str, question: str = "<image>\nQ", answer: str | None = None) -> str:
    conv = conv_templates[name].copy()
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


class MiniProcessor:
    """Stand-in for the SigLIP processor: bicubic resize to 384x384, /255, mean = std = 0.5."""

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    crop_size = {"height": 384, "width": 384}

    def __init__(self, size=None):
        self.size = {"height": 384, "width": 384} if size is None else size

    def preprocess(self, images, return_tensors="pt"):
        if isinstance(images, Image.Image):
            images = [images]
        arrays = [
            np.asarray(im.convert("RGB").resize((384, 384), Image.BICUBIC), dtype=np.float32) / 255.0 for im in images
        ]
        pixel_values = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return {"pixel_values": (pixel_values - 0.5) / 0.5}


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------------------- constants


def test_constants_match_llava_next():
    assert constants.CONTROLLER_HEART_BEAT_EXPIRATION == 30
    assert constants.WORKER_HEART_BEAT_INTERVAL == 15
    assert constants.LOGDIR == "."
    assert constants.IGNORE_INDEX == -100
    assert constants.IMAGE_TOKEN_INDEX == -200
    assert constants.DEFAULT_IMAGE_TOKEN == "<image>"
    assert constants.DEFAULT_IMAGE_PATCH_TOKEN == "<im_patch>"
    assert constants.DEFAULT_IM_START_TOKEN == "<im_start>"
    assert constants.DEFAULT_IM_END_TOKEN == "<im_end>"


# ------------------------------------------------------------------------------------------ conversation


def test_separator_style_members():
    assert [s.name for s in SeparatorStyle] == [
        "SINGLE", "TWO", "MPT", "PLAIN", "CHATML", "LLAMA_2", "LLAMA_3", "QWEN", "GEMMA"
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["qwen_1_5", "qwen_2"])
def test_qwen_prompt_exact(name):
    assert _prompt(name) == QWEN_PROMPT


def test_qwen_multi_turn_and_stop_string():
    prompt = _prompt("qwen_1_5", answer="A")
    assert prompt == QWEN_PROMPT + "A<|im_end|>\n"
    conv = conv_templates["qwen_1_5"]
    assert conv.sep_style == SeparatorStyle.CHATML and conv.sep == "<|im_end|>"


def test_vicuna_v1_prompt_exact():
    assert _prompt("vicuna_v1") == VICUNA_PROMPT
    assert _prompt("v1") == VICUNA_PROMPT
    assert _prompt("vicuna_v1", answer="A") == VICUNA_PROMPT + " A</s>"
    conv = conv_templates["vicuna_v1"]
    assert (conv.sep, conv.sep2, conv.sep_style) == (" ", "</s>", SeparatorStyle.TWO)


def test_llava_v1_prompt_exact():
    assert _prompt("llava_v1") == (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions. "
        "USER: <image>\nQ ASSISTANT:"
    )


def test_plain_prompt_exact():
    assert _prompt("plain") == "<image>\nQ\n"
    assert _prompt("plain", answer="A caption.") == "<image>\nQ\nA caption.\n"


def test_chatml_direct_prompt_exact():
    assert _prompt("chatml_direct") == (
        "<|im_start|>system\nAnswer the questions.<|im_end|>"
        "<|im_start|>user\n<image>\nQ<|im_end|><|im_start|>assistant\n"
    )


def test_default_template_is_vicuna_v0():
    assert conv_templates["default"] is default_conversation is conv_default
    prompt = conv_templates["default"].get_prompt()
    assert prompt.startswith("A chat between a curious human and an artificial intelligence assistant.")
    assert "###Human: What are the key differences between renewable and non-renewable energy sources?###" in prompt
    assert prompt.endswith("###")


def test_copy_leaves_template_untouched():
    template = conv_templates["qwen_1_5"]
    conv = template.copy()
    conv.append_message(conv.roles[0], "hi")
    assert template.messages == [] and conv.messages == [["<|im_start|>user", "hi"]]
    assert isinstance(conv, Conversation) and conv.version == "qwen" and conv.skip_next is False
    llama3 = conv_templates["llava_llama_3"].copy()
    assert llama3.stop_token_ids == [128009] and llama3.tokenizer_id == "meta-llama/Meta-Llama-3-8B-Instruct"


def test_tuple_message_passes_text_through():
    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], ("<image>\nQ", Image.new("RGB", (4, 4)), "Default"))
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == QWEN_PROMPT


def test_llama3_needs_a_tokenizer(tok):
    conv = conv_templates["llava_llama_3"].copy()
    conv.append_message(conv.roles[0], "Q")
    conv.append_message(conv.roles[1], None)
    with pytest.raises(ValueError, match="tokenizer"):
        conv.get_prompt()
    conv.tokenizer = tok  # any tokenizer with a chat template renders through apply_chat_template
    prompt = conv.get_prompt()
    assert prompt.startswith("<|im_start|>system\nYou are a helpful language and vision assistant.")
    assert prompt.endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")


def test_get_conv_template_error_lists_names():
    assert get_conv_template("qwen_1_5").get_prompt() == conv_templates["qwen_1_5"].get_prompt()
    with pytest.raises(ValueError) as excinfo:
        get_conv_template("qwen_7")
    message = str(excinfo.value)
    assert "qwen_7" in message
    for name in ("qwen_1_5", "qwen_2", "chatml_direct", "vicuna_v1", "plain", "llava_v1", "default"):
        assert name in message
    with pytest.raises(KeyError):
        conv_templates["qwen_7"]


# -------------------------------------------------------------------------------------- tiny tokenizer


def test_tiny_tokenizer_files_and_config(tiny_tok_dir, tok):
    for name in TOKENIZER_FILES:
        assert (tiny_tok_dir / name).is_file(), name
    config = json.loads((tiny_tok_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    assert config["model_max_length"] == 32768 and config["bos_token"] is None
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert 400 <= len(tok) <= 600
    assert tok.model_max_length == 32768
    assert tok.bos_token is None and tok.bos_token_id is None
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # Special tokens follow the BPE vocabulary, in Qwen2's order.
    assert [tok.convert_tokens_to_ids(t) for t in TINY_SPECIAL_TOKENS] == [len(tok) - 3, len(tok) - 2, len(tok) - 1]
    vocab = json.loads((tiny_tok_dir / "vocab.json").read_text())
    assert len(vocab) == len(tok) - 3 and not set(TINY_SPECIAL_TOKENS) & set(vocab)


def test_tiny_tokenizer_round_trip_and_no_bos(tok):
    samples = [
        TINY_TOKENIZER_CORPUS,
        "Hello, world! 3 + 4 = 7; x_y(z) [1, 2] {'a': \"b\"}\n\ttab  double  space ",
        QWEN_PROMPT + "The answer is (B).<|im_end|>",
        "~`!@#$%^&*()-_=+[]{}|;:'\",.<>/?\\ 0123456789",
    ]
    for text in samples:
        ids = tok(text).input_ids
        assert tok.decode(ids) == text
    assert tok("Q").input_ids == tok("Q", add_special_tokens=False).input_ids  # no BOS/EOS added
    assert tok("<|im_end|>").input_ids == [tok.eos_token_id]


def test_tiny_tokenizer_uses_qwen2_pretokenizer():
    from transformers.models.qwen2 import tokenization_qwen2

    assert QWEN2_PRETOKENIZE_REGEX == tokenization_qwen2.PRETOKENIZE_REGEX


def test_tiny_tokenizer_splits_image_marker(tok):
    assert "<image>" not in tok.get_vocab()
    assert len(tok("<image>").input_ids) > 1


def test_tiny_tokenizer_chat_template_matches_qwen_1_5(tok):
    messages = [{"role": "user", "content": "<image>\nQ"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == QWEN_PROMPT


def test_tiny_tokenizer_is_deterministic(tiny_tok_dir, tmp_path):
    build_tiny_tokenizer(tmp_path)
    for name in TOKENIZER_FILES:
        assert (tmp_path / name).read_bytes() == (tiny_tok_dir / name).read_bytes(), name


# ------------------------------------------------------------------------------- tokenizer_image_token


def test_tokenizer_image_token_splices_one_placeholder(tok):
    ids = tokenizer_image_token(QWEN_PROMPT, tok)
    assert isinstance(ids, list)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    before, after = QWEN_PROMPT.split("<image>")
    pos = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[:pos] == tok(before).input_ids
    assert ids[pos + 1 :] == tok(after).input_ids


def test_tokenizer_image_token_multiple_and_none(tok):
    ids = tokenizer_image_token("a<image>b<image>", tok, image_token_index=-7)
    assert ids == tok("a").input_ids + [-7] + tok("b").input_ids + [-7]
    assert tokenizer_image_token("no image here", tok) == tok("no image here").input_ids


def test_tokenizer_image_token_tensor(tok):
    ids = tokenizer_image_token(QWEN_PROMPT, tok, return_tensors="pt")
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.long and ids.ndim == 1
    assert ids.tolist() == tokenizer_image_token(QWEN_PROMPT, tok)
    with pytest.raises(ValueError, match="Unsupported tensor type"):
        tokenizer_image_token(QWEN_PROMPT, tok, return_tensors="np")


class _BosTokenizer:
    """Minimal tokenizer that prepends a BOS (id 1), like Llama/Vicuna ones."""

    bos_token_id = 1

    def __call__(self, text):
        return SimpleNamespace(input_ids=[1] + [100 + ord(c) for c in text])


def test_tokenizer_image_token_keeps_bos_once():
    ids = tokenizer_image_token("ab<image>c", _BosTokenizer())
    assert ids == [1, 197, 198, IMAGE_TOKEN_INDEX, 199]
    assert tokenizer_image_token("<image>c", _BosTokenizer()) == [1, IMAGE_TOKEN_INDEX, 199]


# --------------------------------------------------------------------------------------------- stopping


def _ids(tok, text):
    return torch.tensor([tok(text).input_ids])


def test_keywords_stopping_batch1(tok):
    prompt = _ids(tok, QWEN_PROMPT.replace("<image>\n", ""))  # the prompt itself contains <|im_end|>
    criteria = KeywordsStoppingCriteria(["<|im_end|>"], tok, prompt)
    running = torch.cat([prompt, _ids(tok, "The dog")], dim=1)
    done = torch.cat([prompt, _ids(tok, "The dog runs.<|im_end|>")], dim=1)
    out = criteria(running, None)  # the prompt's own <|im_end|> does not count
    assert out.dtype == torch.bool and out.shape == (1,) and out.tolist() == [False]
    assert criteria(done, None).tolist() == [True]


def test_keywords_stopping_batch2_per_row(tok):
    prompt_text = QWEN_PROMPT.replace("<image>\n", "")
    prompt = torch.cat([_ids(tok, prompt_text)] * 2)
    criteria = KeywordsStoppingCriteria(["<|im_end|>"], tok, prompt)
    gen_done = tok("Yes.<|im_end|>").input_ids
    gen_running = tok("The cat and").input_ids
    width = max(len(gen_done), len(gen_running))
    pad = [tok.pad_token_id]
    rows = [gen_done + pad * (width - len(gen_done)), gen_running + pad * (width - len(gen_running))]
    output = torch.cat([prompt, torch.tensor(rows)], dim=1)
    result = criteria(output, None)
    assert result.dtype == torch.bool and result.shape == (2,)
    assert result.tolist() == [True, False]
    # generate() combines criteria with `|` into one (batch,) mask.
    combined = StoppingCriteriaList([criteria, MaxLengthCriteria(max_length=10_000)])(output, None)
    assert combined.tolist() == [True, False]


def test_keywords_stopping_text_keyword_inside_generation(tok):
    prompt = _ids(tok, "USER: Q ASSISTANT:")
    criteria = KeywordsStoppingCriteria("###", tok, prompt)
    output = torch.cat([torch.cat([prompt, _ids(tok, "A###B")], dim=1), torch.cat([prompt, _ids(tok, "A##B#")], dim=1)])
    assert criteria(output, None).tolist() == [True, False]


def test_keywords_stopping_inputs_embeds_output(tok):
    """generate(inputs_embeds=...) returns only new tokens: rows shorter than the prompt are read in full."""
    prompt = _ids(tok, QWEN_PROMPT)
    criteria = KeywordsStoppingCriteria(["<|im_end|>"], tok, prompt)
    assert criteria(_ids(tok, "Yes.<|im_end|>"), None).tolist() == [True]
    assert criteria(_ids(tok, "Yes."), None).tolist() == [False]


def test_keywords_stopping_in_generate(tok):
    """Real transformers 5 generate(): one row stops on a keyword and is padded, the other runs on.

    The keyword is "." so that the row is stopped by this criterion, not by generate's own EOS check.
    eos_token_id must still be set: generate pads finished rows only when an EOS criterion exists.
    """
    from transformers import LogitsProcessor, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    model = Qwen2ForCausalLM(config).eval()
    script = [tok("Yes. It runs").input_ids, tok("The cat and the dog run").input_ids]

    class Scripted(LogitsProcessor):
        def __init__(self, start):
            self.start = start

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.start
            forced = torch.full_like(scores, -1e9)
            for row, tokens in enumerate(script):
                forced[row, tokens[min(step, len(tokens) - 1)]] = 0.0
            return forced

    prompt = torch.cat([_ids(tok, "Q: what?")] * 2)
    criteria = KeywordsStoppingCriteria(["."], tok, prompt)
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=8,
        do_sample=False,
        logits_processor=LogitsProcessorList([Scripted(prompt.shape[1])]),
        stopping_criteria=StoppingCriteriaList([criteria]),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    new = out[:, prompt.shape[1] :].tolist()
    stop = len(tok("Yes.").input_ids)
    assert tok.decode(new[0][:stop]) == "Yes."
    assert len(new[0]) > stop and set(new[0][stop:]) == {tok.pad_token_id}  # padded while row 1 runs on
    assert new[1][: len(script[1])] == script[1]


# ----------------------------------------------------------------------------------------- model names


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("lmms-lab/llava-onevision-qwen2-7b-ov", "llava-onevision-qwen2-7b-ov"),
        ("/data/ckpts/LLaVA-Video-7B-Qwen2/", "LLaVA-Video-7B-Qwen2"),
        ("runs/aot-lora/checkpoint-500", "aot-lora_checkpoint-500"),
        ("/abs/runs/aot-lora/checkpoint-500/", "aot-lora_checkpoint-500"),
        ("tiny", "tiny"),
    ],
)
def test_get_model_name_from_path(path, name):
    assert get_model_name_from_path(path) == name


# --------------------------------------------------------------------------------------- process_images


def test_process_images_pad_uses_mean_colour():
    proc = MiniProcessor()
    image = _image(300, 200)
    out = process_images([image, _image(200, 300, seed=1)], proc, SimpleNamespace(image_aspect_ratio="pad"))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 384, 384)
    mean_value = (127 / 255 - 0.5) / 0.5  # int(0.5 * 255) = 127
    torch.testing.assert_close(out[0, :, :60, :], torch.full((3, 60, 384), mean_value))  # padded top band
    torch.testing.assert_close(out[1, :, :, :60], torch.full((3, 384, 60), mean_value))  # padded left band
    expected = proc.preprocess(expand2square(image, (127, 127, 127)))["pixel_values"][0]
    torch.testing.assert_close(out[0], expected)


@pytest.mark.parametrize("size", [None, (384, 384), {"shortest_edge": 384}])
def test_process_images_anyres_max_9(size):
    proc = MiniProcessor(size)
    cfg = SimpleNamespace(image_aspect_ratio="anyres_max_9", image_grid_pinpoints=OV_GRID_PINPOINTS)
    assert len(OV_GRID_PINPOINTS) == 36 and max(max(p) for p in OV_GRID_PINPOINTS) == 2304
    image = _image(800, 400)
    assert get_anyres_image_grid_shape(image.size, OV_GRID_PINPOINTS, 384) == (3, 2)
    out = process_images([image], proc, cfg)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1 + 3 * 2, 3, 384, 384)
    overview = proc.preprocess(image.resize((384, 384)))["pixel_values"][0]
    torch.testing.assert_close(out[0, 0], overview)
    padded = resize_and_pad_image(image, (1152, 768))
    first_patch = proc.preprocess(padded.crop((0, 0, 384, 384)))["pixel_values"][0]
    torch.testing.assert_close(out[0, 1], first_patch)


def test_process_images_anyres_mixed_grids_give_list():
    cfg = {"image_aspect_ratio": "anyres", "image_grid_pinpoints": OV_GRID_PINPOINTS}
    out = process_images([_image(800, 400), _image(300, 300)], MiniProcessor(), cfg)
    assert isinstance(out, list) and [t.shape[0] for t in out] == [7, 2]


def test_anyres_string_pinpoints_match_list():
    proc = MiniProcessor((384, 384))
    image = _image(500, 900)
    grid = "(1x1),...,(6x6)"
    assert get_anyres_image_grid_shape(image.size, grid, 384) == get_anyres_image_grid_shape(
        image.size, OV_GRID_PINPOINTS, 384
    )
    assert get_anyres_image_grid_shape(image.size, str(OV_GRID_PINPOINTS), 384) == (2, 3)
    torch.testing.assert_close(
        process_anyres_image(image, proc, grid), process_anyres_image(image, proc, OV_GRID_PINPOINTS)
    )


def test_process_images_none_is_plain_preprocess():
    proc = MiniProcessor()
    images = [_image(300, 200), _image(64, 64, seed=2)]
    for cfg in (SimpleNamespace(image_aspect_ratio=None), SimpleNamespace(), {"image_aspect_ratio": "square"}):
        out = process_images(images, proc, cfg)
        torch.testing.assert_close(out, proc.preprocess(images)["pixel_values"])
        assert out.shape == (2, 3, 384, 384)


def test_anyres_geometry_helpers():
    assert select_best_resolution((800, 400), OV_GRID_PINPOINTS) == (1152, 768)
    assert select_best_resolution((384, 384), OV_GRID_PINPOINTS) == (384, 384)
    assert select_best_resolution((4000, 4000), OV_GRID_PINPOINTS) == (2304, 2304)
    padded = resize_and_pad_image(_image(800, 400), (1152, 768))
    assert padded.size == (1152, 768)
    assert np.asarray(padded)[:50].max() == 0  # black bands above the 1152x576 resized image
    patches = divide_to_patches(padded, 384)
    assert len(patches) == 6 and all(p.size == (384, 384) for p in patches)
    assert expand2square(_image(10, 4), (1, 2, 3)).size == (10, 10)
