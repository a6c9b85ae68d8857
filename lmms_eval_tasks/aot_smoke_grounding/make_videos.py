"""Recreate the bundled videos of the ``aot_smoke_grounding`` task.

    .venv/bin/python lmms_eval_tasks/aot_smoke_grounding/make_videos.py            # next to this file
    .venv/bin/python lmms_eval_tasks/aot_smoke_grounding/make_videos.py --out DIR  # or somewhere else

Each clip is 96x96, 48 frames at 8 fps (6 s), mp4 (libx264 when PyAV has it, else mpeg4), yuv420p, on
the dark grey background of ``aot_smoke``. One coloured square is on screen only while ``t0 <= t < t1``
(frame ``i`` shows time ``i / 8`` s), moving in a straight line from ``start`` to ``end`` over those
frames; every other frame is the bare background. ``data.jsonl`` gives ``[t0, t1]`` as each doc's
``timestamp``. The squares are drawn by ``aot_smoke``'s ``make_videos.square_frame``. The frames are a
pure function of :data:`EVENTS`; the encoded bytes can differ between FFmpeg builds.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _smoke_videos():
    """``lmms_eval_tasks/aot_smoke/make_videos.py``, the drawing helpers of the smoke task."""
    name = "aot_smoke_make_videos"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "aot_smoke" / "make_videos.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


smoke = _smoke_videos()
Square = smoke.Square
SIZE, FPS = smoke.SIZE, smoke.FPS
FRAMES = 48  # 6 s at 8 fps


@dataclass(frozen=True)
class Event:
    """``square`` is on screen while ``t0 <= t < t1`` seconds, moving from its start to its end."""

    square: Square
    t0: float
    t1: float

    def __post_init__(self):
        if not 0 <= self.t0 < self.t1 <= FRAMES / FPS:
            raise ValueError(f"event interval [{self.t0}, {self.t1}] must satisfy 0 <= t0 < t1 <= {FRAMES / FPS}")

    def frames(self) -> range:
        """Indices of the frames that show the square: ``t0 <= i / FPS < t1``."""
        first = int(np.ceil(self.t0 * FPS))
        last = int(np.ceil(self.t1 * FPS))  # exclusive
        return range(first, last)


#: file name -> its event.
EVENTS: dict[str, Event] = {
    "red_early.mp4": Event(Square("red", (0, 36), (72, 36)), 0.5, 2.5),
    "green_late.mp4": Event(Square("green", (36, 0), (36, 72)), 3.5, 5.5),
    "blue_middle.mp4": Event(Square("blue", (72, 36), (0, 36)), 2.0, 4.0),
    "yellow_long.mp4": Event(Square("yellow", (36, 72), (36, 0)), 1.0, 5.0),
}


def event_frame(event: Event, index: int) -> np.ndarray:
    """Frame ``index`` before encoding: uint8 ``(SIZE, SIZE, 3)`` RGB."""
    shown = event.frames()
    if index not in shown:
        return smoke.square_frame((), index, FRAMES)
    return smoke.square_frame((event.square,), index - shown.start, len(shown))


def write_event_video(path: Path, event: Event) -> Path:
    """Encode the :func:`event_frame` clip of ``event`` to ``path`` (mp4, yuv420p)."""
    from llava.video import write_rgb_video

    return write_rgb_video(path, (event_frame(event, i) for i in range(FRAMES)), size=(SIZE, SIZE), fps=FPS)


def write_all(out: Path = HERE) -> list[Path]:
    """Write every clip of the task into ``out``; returns the paths in :data:`EVENTS` order."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_event_video(out / name, event) for name, event in EVENTS.items()]


def main(argv: list[str] | None = None) -> None:
    smoke.main(argv, write=write_all, doc=__doc__, default_out=HERE)


if __name__ == "__main__":
    main()
