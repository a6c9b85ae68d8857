"""Recreate the bundled videos of the ``aot_smoke_mcq`` task.

    .venv/bin/python lmms_eval_tasks/aot_smoke/make_videos.py            # rewrite them next to this file
    .venv/bin/python lmms_eval_tasks/aot_smoke/make_videos.py --out DIR  # or somewhere else

Each clip is 96x96, 32 frames at 8 fps (4 s), mp4 (libx264 when PyAV has it, else mpeg4), yuv420p.
Five clips show coloured squares on a dark grey background, each square moving in a straight line
from ``start`` to ``end`` (top-left corner, in pixels); the sixth is the project's own synthetic
clip (:func:`llava.video.write_synthetic_video`: a bright square over a gradient whose colours change
halfway through). The frames are a pure function of :data:`VIDEOS`; the encoded bytes can differ
between FFmpeg builds.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

SIZE = 96  # frame height and width, pixels
SIDE = 24  # square side, pixels
FRAMES = 32
FPS = 8
BACKGROUND = (40, 40, 40)
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
}


@dataclass(frozen=True)
class Square:
    """A square of colour ``colour`` whose top-left corner moves linearly from ``start`` to ``end`` ((x, y))."""

    colour: str
    start: tuple[int, int]
    end: tuple[int, int]


#: file name -> the squares it shows; the scene-cut clip is written separately (see :func:`write_all`).
VIDEOS: dict[str, tuple[Square, ...]] = {
    "red_right.mp4": (Square("red", (0, 36), (72, 36)),),
    "green_down.mp4": (Square("green", (36, 0), (36, 72)),),
    "blue_left.mp4": (Square("blue", (72, 36), (0, 36)),),
    "yellow_up.mp4": (Square("yellow", (36, 72), (36, 0)),),
    "two_squares.mp4": (Square("red", (0, 8), (72, 8)), Square("blue", (72, 64), (0, 64))),
}
SCENE_CUT_VIDEO = "scene_cut.mp4"


def square_position(square: Square, index: int, frames: int = FRAMES) -> tuple[int, int]:
    """Top-left corner ``(x, y)`` of ``square`` in frame ``index`` of ``frames``."""
    t = index / max(frames - 1, 1)
    x = round(square.start[0] + t * (square.end[0] - square.start[0]))
    y = round(square.start[1] + t * (square.end[1] - square.start[1]))
    return x, y


def square_frame(squares: tuple[Square, ...], index: int, frames: int = FRAMES) -> np.ndarray:
    """Frame ``index`` before encoding: uint8 ``(SIZE, SIZE, 3)`` RGB."""
    img = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    for square in squares:
        if square.colour not in COLOURS:
            raise ValueError(f"square colour must be one of {sorted(COLOURS)}, got {square.colour!r}")
        x, y = square_position(square, index, frames)
        img[y : y + SIDE, x : x + SIDE] = COLOURS[square.colour]
    return img


def write_square_video(path: Path, squares: tuple[Square, ...]) -> Path:
    """Encode the :func:`square_frame` clip of ``squares`` to ``path`` (mp4, yuv420p)."""
    from llava.video import write_rgb_video

    return write_rgb_video(path, (square_frame(squares, i) for i in range(FRAMES)), size=(SIZE, SIZE), fps=FPS)


def write_all(out: Path = HERE) -> list[Path]:
    """Write every clip of the task into ``out``; returns the paths in a fixed order."""
    from llava.video import write_synthetic_video

    out.mkdir(parents=True, exist_ok=True)
    paths = [write_square_video(out / name, squares) for name, squares in VIDEOS.items()]
    paths.append(write_synthetic_video(out / SCENE_CUT_VIDEO, frames=FRAMES, size=(SIZE, SIZE), fps=FPS, seed=0))
    return paths


def main(argv: list[str] | None = None, *, write=None, doc: str | None = None, default_out: Path = HERE) -> None:
    """The command line of a task's ``make_videos.py``: ``--out`` (default ``default_out``), then ``write``
    (default: this task's :func:`write_all`) prints each clip it wrote; ``doc`` heads the help."""
    parser = argparse.ArgumentParser(description=(doc or __doc__).splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (default: the task's folder)")
    args = parser.parse_args(argv)
    for path in (write or write_all)(args.out):
        print(f"{path}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
