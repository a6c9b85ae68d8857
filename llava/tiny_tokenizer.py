"""A tiny byte-level BPE tokenizer in the Qwen2 on-disk format, trained in-process for tests.

Real LLaVA-OneVision / LLaVA-Video checkpoints ship Qwen2's tokenizer (151,643 BPE entries plus
``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``). No checkpoint can be downloaded here, so the
test-suite's tiny checkpoints ship this stand-in instead: the same pre-tokenizer, normalizer,
decoder, special tokens and file layout, with a ~500-token vocabulary learnt from
:data:`TINY_TOKENIZER_CORPUS`. Training is deterministic, so every call writes identical files.

Example::

    from llava.tiny_tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer("/tmp/tiny-tok")  # writes the files and loads them back
    tokenizer = AutoTokenizer.from_pretrained("/tmp/tiny-tok")  # same thing, later
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

__all__ = [
    "QWEN2_CHAT_TEMPLATE",
    "QWEN2_PRETOKENIZE_REGEX",
    "TINY_SPECIAL_TOKENS",
    "TINY_TOKENIZER_CORPUS",
    "TINY_VOCAB_SIZE",
    "build_tiny_tokenizer",
]

#: Qwen2's pre-tokenisation regex (identical to ``transformers.models.qwen2.tokenization_qwen2``).
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

#: Qwen2-Instruct's chat template (system prompt injected when the conversation has none).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: Special tokens, in Qwen2's id order: they follow the BPE vocabulary (151643, 151644, 151645 in Qwen2).
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: Size of the learnt BPE vocabulary (256 byte symbols + merges), special tokens excluded.
TINY_VOCAB_SIZE = 509

#: Built-in training corpus: plain English in the register of video-QA prompts, plus digits and punctuation.
TINY_TOKENIZER_CORPUS = """\
You are a helpful assistant. Please answer the following questions related to this video.
The video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it. These frames are located at \
0.00s,1.79s,3.57s,5.36s,7.14s,8.93s,10.71s,12.50s.
Answer with the option's letter from the given choices directly. Answer the question using a single word or phrase.
Select the best answer to the following multiple-choice question based on the video. Respond with only the letter \
(A, B, C, or D) of the correct option.

A man in a red jacket walks along the river while a small dog runs ahead of him. The sun is low in the sky, and \
the water reflects the orange light of the evening. He stops near an old stone bridge, takes a photo with his \
phone, and then turns back toward the city. Two children ride their bicycles past him, laughing and waving.

In the kitchen, a woman cuts tomatoes and onions on a wooden board. She puts them into a pan with some oil and \
stirs for a few minutes. Then she adds rice, water and a pinch of salt, covers the pan and waits. When the rice \
is ready, she serves it on white plates and places them on the table next to a glass of water.

The camera shows a busy street at night. Cars stop at a traffic light, people cross the road, and a bus pulls \
away from the station. A person in a blue coat holds an umbrella because it has started to rain. The shop \
windows are bright, and the reflections on the wet ground move as the vehicles pass.

What is the person doing at the beginning of the video? Why does the man open the door? How many people are in \
the room? Where is the ball after the player kicks it? Which object does the woman pick up first? What color is \
the car that turns left? Is the dog sitting or standing? When does the light change from green to red?

The model reads each frame, turns it into visual tokens, and writes a short answer. A question and an answer are \
written as a conversation between a user and an assistant: the user asks, the assistant answers, and the system \
message sets the rules. Good answers are short, correct and based only on what can be seen in the images.

Numbers and symbols: 0 1 2 3 4 5 6 7 8 9 10 11 12 16 24 32 64 100 128 256 384 512 729 1024 2024 3.14 -1 +2 50% \
$5 #3 @home a_b a-b a/b a\\b (x) [y] {z} <a> x=1; y: 2, z! w? "quoted" 'single' `tick` ~tilde ^caret &and *star |pipe
A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z
"""


def _special_token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def _train_backend(vocab_size: int = TINY_VOCAB_SIZE) -> Tokenizer:
    """Train the byte-level BPE backend with Qwen2's exact pipeline; special tokens go after the vocabulary."""
    tokenizer = Tokenizer(
        BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = [line for line in TINY_TOKENIZER_CORPUS.splitlines(keepends=True) if line.strip()]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in TINY_SPECIAL_TOKENS])
    return tokenizer


def build_tiny_tokenizer(path: str | os.PathLike):
    """Write a tiny Qwen2-format tokenizer to ``path`` and return it loaded with ``AutoTokenizer``.

    The folder gets ``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and
    ``special_tokens_map.json`` laid out as in ``Qwen/Qwen2-7B-Instruct``: ``tokenizer_class``
    ``"Qwen2Tokenizer"``, no BOS, ``<|im_end|>`` as EOS, ``<|endoftext|>`` as pad, ``model_max_length``
    32768 and Qwen2's chat template. ``<image>`` is not a vocabulary entry (the pre-tokenizer always
    splits off ``>``), as with the real tokenizer.

    Args:
        path: Output folder (created if missing; existing files of the same names are overwritten).

    Returns:
        The ``transformers`` tokenizer loaded back from ``path``.
    """
    from transformers import AutoTokenizer

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    backend = _train_backend()

    backend.save(str(out / "tokenizer.json"))
    backend.model.save(str(out), None)  # vocab.json + merges.txt (BPE entries only, like Qwen2's files)

    added_tokens_decoder = {
        str(backend.token_to_id(tok)): {**_special_token_entry(tok), "special": True} for tok in TINY_SPECIAL_TOKENS
    }
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    special_tokens_map = {
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": _special_token_entry("<|im_end|>"),
        "pad_token": _special_token_entry("<|endoftext|>"),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special_tokens_map, indent=2, ensure_ascii=False) + "\n")
    return AutoTokenizer.from_pretrained(str(out))
