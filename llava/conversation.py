"""Conversation templates, with LLaVA-NeXT's names, fields and prompt strings.

Scripts and lmms-eval's ``llava_onevision`` / ``llava_vid`` adapters use it the LLaVA-NeXT way::

    from llava.conversation import SeparatorStyle, conv_templates

    conv = conv_templates["qwen_1_5"].copy()
    conv.append_message(conv.roles[0], "<image>\\nWhat happens in the video?")
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    # '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n'
    # 'What happens in the video?<|im_end|>\\n<|im_start|>assistant\\n'
    stop_str = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2

The templates are those a LLaVA-NeXT user selects by name with these checkpoints (keys of
:data:`conv_templates`):

- ``qwen_1_5`` (= ``qwen_2``), ``qwen_2_5``: LLaVA-OneVision and LLaVA-Video (Qwen2), the
  ``conv_template=`` of lmms-eval and of the ``aot_*`` plugins, ``aot infer --conv-template`` and
  ``--version`` of ``python -m llava.train.train`` (training takes these ChatML templates only);
- ``vicuna_v1`` (= ``v1``): the default ``conv_template`` of lmms-eval's ``llava_vid``, which the
  ``aot_llava_vid`` plugin keeps; ``llava_v1``, ``default`` (= ``v0``, :data:`default_conversation`),
  ``plain`` (LLaVA-NeXT's projector pre-training prompt), ``chatml_direct``;
- ``llava_llama_3``: named by lmms-eval's LLaVA adapters (they deep-copy it).

LLaVA-NeXT's templates for Llama-2, Mistral, MPT and Gemma language models are not here: no
checkpoint this package loads uses them. ``SeparatorStyle`` keeps all of LLaVA-NeXT's members;
``LLAMA_2`` and ``GEMMA`` do not render (``get_prompt`` raises ``ValueError``).

Differences from LLaVA-NeXT, all on paths where LLaVA-NeXT fails or needs the network:

- Image tuples ``(text, image, mode)`` as messages are reduced to their text; no image handling.
- ``copy()`` keeps every field (LLaVA-NeXT's drops ``tokenizer``/``stop_token_ids``).
- ``PLAIN`` with ``sep2=None`` uses ``sep`` after assistant messages too (LLaVA-NeXT raises ``TypeError``).
- ``QWEN`` renders like ``CHATML`` (LLaVA-NeXT defines the style but no template or rendering for it).
- ``llava_llama_3`` carries ``tokenizer=None``: LLaVA-NeXT downloads the Llama-3 tokenizer at import
  time; set ``conv.tokenizer`` yourself before calling ``get_prompt()`` with that template.
- :func:`get_conv_template` is an addition: it raises ``ValueError`` listing the known names, while
  ``conv_templates[name]`` stays a plain ``KeyError`` as scripts expect.
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto
from typing import Any

__all__ = [
    "Conversation",
    "SeparatorStyle",
    "conv_default",
    "conv_templates",
    "default_conversation",
    "get_conv_template",
]


class SeparatorStyle(Enum):
    """How a :class:`Conversation` joins its system prompt, roles and messages."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    CHATML = auto()
    LLAMA_2 = auto()
    LLAMA_3 = auto()
    QWEN = auto()
    GEMMA = auto()


def _text(message: Any) -> Any:
    """The text of a message: image tuples ``(text, image, ...)`` are reduced to ``text``."""
    if isinstance(message, tuple):
        return message[0]
    return message


@dataclasses.dataclass
class Conversation:
    """A conversation history plus the template that renders it into one prompt string.

    ``messages`` is a list of ``[role, text]`` pairs; a ``None`` text marks the turn the model is to
    write (``append_message(conv.roles[1], None)``), which renders as the bare role header.
    """

    system: str
    roles: tuple[str, str] | list[str]
    messages: list[list[Any]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    tokenizer_id: str = ""
    tokenizer: Any = None
    # Stop criteria (the default one is EOS token)
    stop_str: str | list[str] | None = None
    # Stops generation if meeting any token in this list
    stop_token_ids: list[int] | None = None

    skip_next: bool = False

    def get_prompt(self) -> str:
        """Render the system prompt and all messages with this template's separator style."""
        messages = [(role, _text(message)) for role, message in self.messages]

        if self.sep_style == SeparatorStyle.SINGLE:
            ret = self.system + self.sep
            for role, message in messages:
                if message:
                    ret += role + ": " + message + self.sep
                else:
                    ret += role + ":"

        elif self.sep_style == SeparatorStyle.TWO:
            seps = [self.sep, self.sep2]
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(messages):
                if message:
                    ret += role + ": " + message + seps[i % 2]
                else:
                    ret += role + ":"

        elif self.sep_style in (SeparatorStyle.CHATML, SeparatorStyle.QWEN):
            ret = "" if self.system == "" else self.system + self.sep + "\n"
            for role, message in messages:
                if message:
                    ret += role + "\n" + message + self.sep + "\n"
                else:
                    ret += role + "\n"

        elif self.sep_style == SeparatorStyle.LLAMA_3:
            if self.tokenizer is None:
                raise ValueError(
                    "The LLAMA_3 style renders through tokenizer.apply_chat_template: set conv.tokenizer "
                    f"(e.g. AutoTokenizer.from_pretrained({self.tokenizer_id!r})) first."
                )
            chat_template_messages = [{"role": "system", "content": self.system}]
            for role, message in messages:
                if message:
                    chat_template_messages.append({"role": role, "content": message})
            return self.tokenizer.apply_chat_template(
                chat_template_messages, tokenize=False, add_generation_prompt=True
            )

        elif self.sep_style == SeparatorStyle.MPT:
            ret = self.system + self.sep
            for role, message in messages:
                if message:
                    ret += role + message + self.sep
                else:
                    ret += role

        elif self.sep_style == SeparatorStyle.PLAIN:
            seps = [self.sep, self.sep2 if self.sep2 is not None else self.sep]
            ret = self.system
            for i, (_role, message) in enumerate(messages):
                if message:
                    ret += message + seps[i % 2]

        else:
            raise ValueError(f"sep_style={self.sep_style} does not render here; expected one of SINGLE, TWO, "
                             "CHATML, QWEN, LLAMA_3, MPT or PLAIN (the styles of conv_templates)")

        return ret

    def append_message(self, role: str, message: Any) -> None:
        """Append one turn; ``message=None`` leaves the turn open for the model to complete."""
        self.messages.append([role, message])

    def copy(self) -> Conversation:
        """A copy whose message list can be extended without touching the template it came from."""
        return dataclasses.replace(
            self,
            messages=[[role, message] for role, message in self.messages],
            stop_token_ids=list(self.stop_token_ids) if self.stop_token_ids is not None else None,
        )

    def dict(self) -> dict[str, Any]:
        """Serialisable summary, as LLaVA-NeXT's ``Conversation.dict()``."""
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[role, _text(message)] for role, message in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }


conv_vicuna_v0 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("Human", "Assistant"),
    messages=[
        ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
        [
            "Assistant",
            "Renewable energy sources are those that can be replenished naturally in a relatively "
            "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
            "Non-renewable energy sources, on the other hand, are finite and will eventually be "
            "depleted, such as coal, oil, and natural gas. Here are some key differences between "
            "renewable and non-renewable energy sources:\n"
            "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
            "energy sources are finite and will eventually run out.\n"
            "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
            "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
            "and other negative effects.\n"
            "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
            "have lower operational costs than non-renewable sources.\n"
            "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
            "locations than non-renewable sources.\n"
            "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
            "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
            "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
            "non-renewable sources are not, and their depletion can lead to economic and social instability.\n",
        ],
    ],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_vicuna_v1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_llama_3 = Conversation(
    system="You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language.",
    roles=("user", "assistant"),
    version="llama_v3",
    messages=[],
    offset=0,
    sep="<|eot_id|>",
    sep_style=SeparatorStyle.LLAMA_3,
    tokenizer_id="meta-llama/Meta-Llama-3-8B-Instruct",
    tokenizer=None,
    stop_token_ids=[128009],
)

conv_qwen = Conversation(
    system="""<|im_start|>system
You are a helpful assistant.""",
    roles=("<|im_start|>user", "<|im_start|>assistant"),
    version="qwen",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.CHATML,
    sep="<|im_end|>",
)

conv_qwen_2_5 = Conversation(
    system="""<|im_start|>system
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.""",
    roles=("<|im_start|>user", "<|im_start|>assistant"),
    version="qwen",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.CHATML,
    sep="<|im_end|>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)

conv_llava_v1 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_chatml_direct = Conversation(
    system="""<|im_start|>system
Answer the questions.""",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

default_conversation = conv_vicuna_v0
#: Alias of :data:`default_conversation` (``conv_templates["default"]``).
conv_default = default_conversation

#: The templates a LLaVA-NeXT user selects by name: ``conv_template=`` of lmms-eval's ``llava_onevision``
#: / ``llava_vid`` and of this package's plugins, ``aot infer --conv-template``, and ``--version`` of
#: ``python -m llava.train.train`` (which takes the ChatML ones: ``qwen_*``).
conv_templates: dict[str, Conversation] = {
    "qwen_1_5": conv_qwen,  # LLaVA-OneVision and LLaVA-Video (Qwen2): evaluation and training
    "qwen_2": conv_qwen,
    "qwen_2_5": conv_qwen_2_5,
    "vicuna_v1": conv_vicuna_v1,  # the default conv_template of lmms-eval's llava_vid
    "v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "default": conv_vicuna_v0,  # default_conversation
    "v0": conv_vicuna_v0,
    "plain": conv_llava_plain,  # LLaVA-NeXT's projector pre-training prompt
    "chatml_direct": conv_chatml_direct,
    "llava_llama_3": conv_llava_llama_3,  # named by lmms-eval's llava adapters ("llama_3" in conv_template)
}


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the template ``name``.

    Raises:
        ValueError: ``name`` is not a key of :data:`conv_templates`; the message lists the known names.
    """
    try:
        template = conv_templates[name]
    except KeyError:
        known = ", ".join(sorted(conv_templates))
        raise ValueError(f"Unknown conversation template {name!r}; known templates: {known}") from None
    return template.copy()
