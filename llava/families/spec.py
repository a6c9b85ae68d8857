"""What a model family is: :class:`FamilySpec` and its parts, frozen and checked when built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: the on-disk layouts a family's checkpoints come in: LLaVA-NeXT's original one (``model_type: llava``
#: with ``mm_*`` keys), or Hugging Face's (``config.json`` as transformers writes it)
Layout = Literal["llava_next", "hf"]
LAYOUTS = ("llava_next", "hf")


@dataclass(frozen=True)
class PluginSpec:
    """The family's lmms-eval plugin model.

    model_id:   the lmms-eval ``--model`` name (``aot_<builtin>`` for the built-in families)
    class_path: ``"package.module.Class"`` of the adapter, imported by lmms-eval only when a run asks for it
    builtin:    the lmms-eval built-in adapter it equals at ``compression=none`` (``llava_onevision``, ...)
    chat:       a chat model (lmms-eval hands it ``doc_to_messages``) or a simple one (``doc_to_visual``)
    frames_arg: the model_args key of the frame count (``max_frames_num``, ``max_num_frames``)
    """

    model_id: str
    class_path: str
    builtin: str
    chat: bool = False
    frames_arg: str = "max_frames_num"

    def __post_init__(self) -> None:
        for name in ("model_id", "builtin", "frames_arg"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "," in value or "=" in value:
                raise ValueError(f"plugin {name}={value!r} is not valid; expected a non-empty name without ',' or '='")
        module, _, cls = str(self.class_path).rpartition(".")
        if not module or not cls:
            raise ValueError(f"plugin class_path={self.class_path!r} is not valid; expected 'package.module.Class'")


@dataclass(frozen=True)
class TinySpec:
    """The family's tiny random-weight checkpoint, as ``aot sweep`` writes and runs it.

    writer:     ``writer(folder) -> folder``: writes config, tokenizer/processor and weights
    folder:     the folder name under the sweep's ``--out``
    model_args: the plugin's model arguments that go with it (frames, pixels, dtype), as pairs
    """

    writer: Callable[[Path], Path]
    folder: str
    model_args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not callable(self.writer):
            raise ValueError(f"tiny writer={self.writer!r} is not valid; expected a callable writer(folder) -> folder")
        if not isinstance(self.folder, str) or not self.folder or "/" in self.folder:
            raise ValueError(f"tiny folder={self.folder!r} is not valid; expected a folder name without '/'")

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.model_args)


@dataclass(frozen=True)
class FamilySpec:
    """One registered model family.

    name:         the name users write (``aot infer --family <name>``)
    title:        how docs and tables spell it (``"LLaVA-OneVision"``)
    model_types:  the checkpoint ``config.json`` ``model_type`` values it runs
    layout:       ``"llava_next"`` (the original LLaVA-NeXT layout) or ``"hf"`` (transformers' own)
    answer:       ``answer(model_path, clip, question, options) -> (answer, SampleRecord)``: loads the
                  checkpoint and answers one question about one decoded clip (``aot infer``);
                  ``options`` is a :class:`llava.families.infer.InferOptions`
    seam:         import path of what applies the compression inside the model (documentation,
                  and what :func:`llava.families.list_families` shows)
    plugin:       its lmms-eval plugin model (:class:`PluginSpec`)
    tiny:         its tiny checkpoint (:class:`TinySpec`)
    score_layers: ``score_layers(model_config) -> (shallow, deep)``: the vision layers whose attention
                  scores AOT reads by default
    auto_detect:  whether a checkpoint whose ``model_type`` it lists is run as this family without
                  ``--family``; at most one auto-detected family per ``model_type``
    load, answer_loaded: optional, both or neither: ``load(model_path, options) -> loaded`` loads the
                  checkpoint once (an object with the network as ``.model``) and
                  ``answer_loaded(loaded, clip, question, options) -> (answer, SampleRecord)`` answers with
                  it under ``options.compression``, as ``answer`` would; what a server holding the model
                  (``aot demo --serve``) runs. Without them a server loads the checkpoint per request.
    """

    name: str
    title: str
    model_types: tuple[str, ...]
    layout: Layout
    answer: Callable[..., tuple[str, Any]]
    seam: str
    plugin: PluginSpec
    tiny: TinySpec
    score_layers: Callable[[Any], tuple[int, int]]
    auto_detect: bool = True
    load: Callable[..., Any] | None = None
    answer_loaded: Callable[..., tuple[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"family name {self.name!r} is not valid; expected a Python identifier "
                             "such as 'qwen2_5_vl'")
        if isinstance(self.model_types, str) or not all(isinstance(t, str) and t for t in self.model_types):
            raise ValueError(f"family {self.name!r}: model_types={self.model_types!r} is not valid; "
                             "expected a tuple of model_type names")
        if self.layout not in LAYOUTS:
            raise ValueError(f"family {self.name!r}: layout={self.layout!r} is not valid; expected one of {LAYOUTS}")
        for name, kind in (("plugin", PluginSpec), ("tiny", TinySpec)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"family {self.name!r}: {name} must be a {kind.__name__}; "
                                 f"got {type(getattr(self, name)).__name__}")
        for name in ("answer", "score_layers"):
            if not callable(getattr(self, name)):
                raise ValueError(f"family {self.name!r}: {name}={getattr(self, name)!r} is not callable")
        if (self.load is None) != (self.answer_loaded is None):
            raise ValueError(f"family {self.name!r}: load and answer_loaded go together; expected both or neither")
        for name in ("load", "answer_loaded"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ValueError(f"family {self.name!r}: {name}={getattr(self, name)!r} is not callable")
