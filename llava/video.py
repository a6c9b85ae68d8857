"""Video loading and frame sampling as lmms-eval's LLaVA adapters do it, plus a synthetic test clip.

Two samplers, matching lmms-eval 0.7.x (and LLaVA-NeXT's training loader):

* ``mode="uniform"`` — ``llava_onevision``: ``np.linspace(0, n - 1, max_frames, dtype=int)``
  (32 frames for OV). Fewer than ``max_frames`` frames in the file means indices repeat.
* ``mode="fps"`` — ``llava_vid`` (LLaVA-Video): one frame every ``round(avg_fps / target_fps)`` frames
  (1 fps by default); if that gives more than ``max_frames`` (64 for LLaVA-Video), or ``force_sample``
  is set, it switches to the uniform linspace above.

Timestamps follow the same code, quirks included, so that :meth:`VideoClip.time_instruction` is the
exact string LLaVA-Video was trained and evaluated with: on the 1-fps path lmms-eval computes
``index / stride`` (whole seconds for a 1 fps target; equal to ``index / avg_fps`` when the frame
rate is an integer), on the uniform path ``index / avg_fps``. ``duration`` is
``total_frames / avg_fps``.

Frames are decoded with ``decord.VideoReader(path, ctx=cpu(0), num_threads=1)`` as lmms-eval does.
decord 0.6 mis-shapes frames of some narrow videos (widths 16, 24, 48, 72: it reports the padded row
stride as extra channels and ``get_batch`` fails); :func:`load_video` detects and repairs that.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "VideoClip",
    "VideoDecodeError",
    "load_video",
    "sample_frame_indices",
    "synthetic_frame",
    "write_synthetic_video",
]

#: Suffixes that are still images; passing one of these as a video is an error.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".ico", ".heic", ".jfif"}
)


logger = logging.getLogger(__name__)


class VideoDecodeError(ValueError):
    """A video file exists but cannot be used: undecodable, empty, an image, or without frames."""


# ---------------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------------
def _check_counts(total_frames: int, max_frames: int) -> None:
    if int(max_frames) != max_frames or max_frames < 1:
        raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    if int(total_frames) != total_frames or total_frames < 1:
        raise ValueError(f"total_frames must be an integer >= 1, got {total_frames!r}")


def _fps_stride(fps: float, target_fps: float) -> int:
    """lmms-eval's ``round(avg_fps / target_fps)`` (Python's round), at least 1."""
    if fps is None or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"mode='fps' needs the video's average fps (> 0), got {fps!r}")
    if not math.isfinite(target_fps) or target_fps <= 0:
        raise ValueError(f"target_fps must be > 0, got {target_fps!r}")
    return max(1, round(fps / target_fps))


def _sample(
    total_frames: int, max_frames: int, fps: float | None, mode: str, force_sample: bool, target_fps: float
) -> tuple[list[int], int | None]:
    """(indices, stride) — ``stride`` is ``None`` when the uniform linspace was used."""
    _check_counts(total_frames, max_frames)
    if mode not in ("uniform", "fps"):
        raise ValueError(f"mode must be 'uniform' (LLaVA-OneVision) or 'fps' (LLaVA-Video), got {mode!r}")
    if mode == "fps":
        stride = _fps_stride(fps, target_fps)  # type: ignore[arg-type]
        indices = list(range(0, int(total_frames), stride))
        if len(indices) <= max_frames and not force_sample:
            return indices, stride
    uniform = np.linspace(0, int(total_frames) - 1, int(max_frames), dtype=int)
    return [int(i) for i in uniform], None


def _repeat_warning(total_frames: int, max_frames: int, what: str) -> str:
    return (
        f"{what} has only {total_frames} frames but {max_frames} were requested: uniform sampling "
        f"repeats frames (np.linspace over {total_frames} frames, as lmms-eval does)"
    )


def _warn_repeat(message: str) -> None:
    """A ``UserWarning`` and the same text on this module's ``logging`` logger: lmms-eval ignores every
    warning once it is imported, and the logger's WARNING still reaches stderr."""
    warnings.warn(message, UserWarning, stacklevel=3)
    logger.warning(message)


def sample_frame_indices(
    total_frames: int,
    *,
    max_frames: int,
    fps: float | None = None,
    mode: str = "uniform",
    force_sample: bool = False,
    target_fps: float = 1.0,
) -> list[int]:
    """Frame indices chosen by lmms-eval's LLaVA adapters.

    Args:
        total_frames: number of frames in the video (``len(VideoReader)``), >= 1.
        max_frames: frames for uniform sampling (OV 32, LLaVA-Video 64); also the cap of the fps path.
        fps: the video's average frame rate; required for ``mode="fps"``.
        mode: ``"uniform"`` (``llava_onevision``) or ``"fps"`` (``llava_vid``).
        force_sample: ``mode="fps"`` only: always use the uniform linspace.
        target_fps: sampling rate of the fps path (lmms-eval's ``fps`` argument, 1 by default).

    Returns:
        Python ints, ascending; ``len == max_frames`` on the uniform path (with repeats if
        ``total_frames < max_frames``, which also emits a ``UserWarning``).
    """
    indices, stride = _sample(total_frames, max_frames, fps, mode, force_sample, target_fps)
    if stride is None and total_frames < max_frames:
        _warn_repeat(_repeat_warning(total_frames, max_frames, "the video"))
    return indices


# ---------------------------------------------------------------------------------------------------
# loaded clip
# ---------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class VideoClip:
    """Frames sampled from one video.

    Attributes:
        frames: uint8 RGB array ``(T, H, W, 3)``.
        indices: the ``T`` frame indices that were decoded (may repeat for short videos).
        frames_read: the distinct frames among them (:attr:`frames_read`; ``T`` unless indices repeat).
        timestamps: ``T`` times in seconds, computed as lmms-eval does (see module docstring).
        duration: ``total_frames / fps`` in seconds.
        fps: the container's average frame rate (``VideoReader.get_avg_fps()``).
        total_frames: frames in the file (``len(VideoReader)``).
        path: the video path as a string.
    """

    frames: np.ndarray = field(repr=False)
    indices: list[int]
    timestamps: list[float]
    duration: float
    fps: float
    total_frames: int
    path: str

    @property
    def num_frames(self) -> int:
        """``T``, the number of sampled frames."""
        return int(self.frames.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    @property
    def frames_read(self) -> int:
        """The distinct frames read from the file: ``T`` less the repeats of a video shorter than ``max_frames``."""
        return len(set(self.indices))

    @property
    def frame_time(self) -> str:
        """lmms-eval's ``frame_time`` string: ``"0.00s,1.00s,…"``."""
        return ",".join(f"{t:.2f}s" for t in self.timestamps)

    def time_instruction(self) -> str:
        """LLaVA-Video's time instruction, character for character as lmms-eval's ``llava_vid`` builds it."""
        if not math.isfinite(self.duration):
            raise ValueError(f"{self.path}: the container reports no frame rate, so there is no time instruction")
        return (
            f"The video lasts for {self.duration:.2f} seconds, and {self.num_frames} frames are uniformly "
            f"sampled from it. These frames are located at {self.frame_time}."
            "Please answer the following questions related to this video."
        )


# ---------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------
def _open_reader(path: str, num_threads: int) -> Any:
    """``decord.VideoReader(path, ctx=cpu(0), num_threads=num_threads)`` (a seam tests can replace)."""
    from decord import VideoReader, cpu

    return VideoReader(path, ctx=cpu(0), num_threads=num_threads)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _decoder_message(path: str, exc: BaseException) -> str:
    """decord's message, plus FFmpeg's own diagnosis through PyAV (decord only logs it to stderr)."""
    parts = [f"decord: {type(exc).__name__}: {_first_line(str(exc)) or '(no message)'}"]
    try:
        import av

        with av.open(path) as container:
            if not container.streams.video:
                parts.append("ffmpeg: the file has no video stream")
    except Exception as av_exc:  # noqa: BLE001 - any diagnosis is better than none
        parts.append(f"ffmpeg: {_first_line(str(av_exc))}")
    return "; ".join(parts)


def _still_image_format(path: Path) -> str | None:
    """The PIL format name if ``path`` is a still image (not an animated GIF/WebP), else ``None``."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return path.suffix.lower().lstrip(".").upper()
    try:
        with Image.open(path) as im:
            fmt = im.format or "image"
            n_frames = int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - not something PIL can open: let the video decoder judge it
        return None
    if fmt.upper() == "MPEG" or n_frames > 1:  # PIL only identifies MPEG; animations are videos
        return None
    return fmt


def _to_numpy(batch: Any) -> np.ndarray:
    """decord's batch as numpy, whatever bridge (native/torch/…) someone has set globally."""
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    if hasattr(batch, "numpy"):
        return batch.cpu().numpy() if hasattr(batch, "cpu") else batch.numpy()
    return np.asarray(batch)


def _unpad_rgb(frame: np.ndarray) -> np.ndarray:
    """Undo decord 0.6's stride bug on narrow videos: ``(H, W, C != 3)`` whose rows are padded RGB.

    decord pads each RGB row to an aligned byte stride; when that stride is a multiple of ``W`` (widths
    16, 24, 48, 72 …) it reports ``(H, W, stride / W)`` instead of ``(H, W, 3)`` and ``get_batch`` fails.
    The first ``3 * W`` bytes of every row are the real pixels.
    """
    if frame.ndim != 3 or frame.shape[-1] == 3:
        return frame
    height, width, channels = frame.shape
    if channels < 3:
        raise ValueError(f"frame of shape {frame.shape} is not RGB")
    return np.ascontiguousarray(frame.reshape(height, width * channels)[:, : 3 * width].reshape(height, width, 3))


def _read_frames(reader: Any, indices: list[int]) -> np.ndarray:
    """``reader.get_batch(indices)`` as uint8 ``(T, H, W, 3)``, falling back to per-frame reads."""
    try:
        frames = _to_numpy(reader.get_batch(indices))
        if frames.ndim == 4 and frames.shape[-1] == 3:
            return frames
    except Exception as batch_exc:  # decord's stride bug raises here ("The size must exactly match")
        first_error: Exception | None = batch_exc
    else:
        first_error = None
    try:
        return np.stack([_unpad_rgb(_to_numpy(reader[i])) for i in indices])
    except Exception as frame_exc:
        raise (first_error or frame_exc) from None


def load_video(
    path: str | os.PathLike[str],
    *,
    max_frames: int = 32,
    mode: str = "uniform",
    force_sample: bool = False,
    target_fps: float = 1.0,
    num_threads: int = 1,
) -> VideoClip:
    """Decode the frames lmms-eval's LLaVA adapters would use.

    Args:
        path: video file (anything FFmpeg/decord reads: mp4, mkv, webm, avi, animated gif, …).
        max_frames: OV uses 32 (``mode="uniform"``); LLaVA-Video uses 64 (``mode="fps"``).
        mode: ``"uniform"`` (``llava_onevision``) or ``"fps"`` (``llava_vid``, 1 frame per second,
            uniform when that exceeds ``max_frames``); see :func:`sample_frame_indices`.
        force_sample: ``mode="fps"``: always sample ``max_frames`` uniformly (LLaVA-Video's eval setting).
        target_fps: rate of the fps path (default 1).
        num_threads: decord decoding threads (lmms-eval uses 1).

    Returns:
        :class:`VideoClip` with ``frames`` uint8 ``(T, H, W, 3)`` RGB.

    Raises:
        FileNotFoundError: no such file.
        VideoDecodeError: empty or undecodable file, an image instead of a video, or 0 frames.
        ValueError: ``max_frames < 1`` or a bad ``mode``.
    """
    _check_counts(1, max_frames)
    if mode not in ("uniform", "fps"):
        raise ValueError(f"mode must be 'uniform' (LLaVA-OneVision) or 'fps' (LLaVA-Video), got {mode!r}")
    p = Path(os.fspath(path))
    name = str(p)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "video file not found", name)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "expected a video file, got a directory", name)
    if p.stat().st_size == 0:
        raise VideoDecodeError(f"cannot decode video {name}: the file is empty (0 bytes)")
    image_format = _still_image_format(p)
    if image_format is not None:
        raise VideoDecodeError(
            f"an image ({image_format}) was given where a video is expected: {name}; "
            "pass images through the image path, or a video file here"
        )

    try:
        reader = _open_reader(name, num_threads)
    except Exception as exc:  # decord raises RuntimeError / DECORDError with terse messages
        raise VideoDecodeError(f"cannot decode video {name}: {_decoder_message(name, exc)}") from exc

    total = len(reader)
    if total == 0:
        raise VideoDecodeError(f"video {name} has 0 frames")
    fps = float(reader.get_avg_fps())
    if not math.isfinite(fps) or fps <= 0:
        if mode == "fps":
            raise VideoDecodeError(f"video {name} reports no usable frame rate ({fps}); mode='fps' needs one")
        fps = math.nan

    indices, stride = _sample(total, max_frames, fps, mode, force_sample, target_fps)
    if stride is None and total < max_frames:
        _warn_repeat(_repeat_warning(total, max_frames, f"video {name}"))

    try:
        frames = _read_frames(reader, indices)
    except Exception as exc:
        raise VideoDecodeError(
            f"cannot decode frames {indices[:4]}… of video {name}: {_decoder_message(name, exc)}"
        ) from exc
    finally:
        del reader
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        raise VideoDecodeError(f"video {name}: decoder returned frames of shape {frames.shape}, expected (T, H, W, 3)")
    frames = np.ascontiguousarray(frames, dtype=np.uint8)

    if stride is not None:  # lmms-eval llava_vid: frame_time = [i / stride for i in frame_idx]
        timestamps = [i / stride for i in indices]
    else:  # uniform path: frame_time = [i / avg_fps for i in frame_idx]
        timestamps = [i / fps for i in indices]
    return VideoClip(
        frames=frames,
        indices=indices,
        timestamps=timestamps,
        duration=total / fps,
        fps=fps,
        total_frames=total,
        path=name,
    )


# ---------------------------------------------------------------------------------------------------
# synthetic clip for tests and demos
# ---------------------------------------------------------------------------------------------------
def synthetic_frame(
    index: int, *, frames: int = 48, size: tuple[int, int] = (96, 128), seed: int = 0, scene_cut: bool = True
) -> np.ndarray:
    """Frame ``index`` of :func:`write_synthetic_video`'s clip before encoding: uint8 ``(H, W, 3)`` RGB.

    A colour gradient whose phase drifts with time, a bright square moving left to right (and
    bouncing vertically), and — with ``scene_cut`` — different gradient colours from ``frames // 2`` on.
    """
    height, width = size
    rng = np.random.default_rng(seed)
    palettes = rng.uniform(30, 170, size=(2, 2, 3))  # (scene, corner, rgb), dark enough for the square
    scene = 1 if scene_cut and index >= frames // 2 else 0
    c0, c1 = palettes[scene]
    t = index / max(frames - 1, 1)
    yy, xx = np.mgrid[0:height, 0:width]
    phase = (xx / width + 0.5 * yy / height + (t if scene == 0 else -t)) % 1.0
    weight = 0.5 - 0.5 * np.cos(2 * np.pi * phase)  # smooth periodic ramp in [0, 1]
    img = c0[None, None, :] * (1 - weight[..., None]) + c1[None, None, :] * weight[..., None]
    side = max(4, min(height, width) // 5)
    x0 = int(round(t * (width - side)))
    y0 = int(round(abs(math.sin(np.pi * 2 * t)) * (height - side)))
    img[y0 : y0 + side, x0 : x0 + side] = (250.0, 245.0, 235.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def pick_codec() -> str:
    """The first H.264 / MPEG-4 encoder PyAV's FFmpeg has (libx264, else mpeg4)."""
    import av

    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - encoder not built into this FFmpeg
            continue
        return name
    raise RuntimeError("PyAV's FFmpeg has neither the libx264 nor the mpeg4 encoder")


def write_synthetic_video(
    path: str | os.PathLike[str],
    *,
    frames: int = 48,
    size: tuple[int, int] = (96, 128),
    fps: float = 8,
    seed: int = 0,
    scene_cut: bool = True,
    codec: str | None = None,
) -> Path:
    """Write a small real video (mp4, yuv420p) with PyAV; frames are :func:`synthetic_frame`.

    Args:
        path: output file (parent folders are created).
        frames: number of frames (>= 1).
        size: ``(H, W)``, both even (yuv420p).
        fps: frame rate; 48 frames at 8 fps make a 6 s clip.
        seed: picks the gradient colours.
        scene_cut: switch background colours after half the frames.
        codec: encoder name; default libx264 when PyAV has it, else mpeg4.

    Returns:
        The path written, as ``Path``.
    """
    height, width = (int(v) for v in size)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise ValueError(f"size must be (H, W) with even H, W >= 2 for yuv420p, got {size}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    images = (synthetic_frame(i, frames=frames, size=(height, width), seed=seed, scene_cut=scene_cut)
              for i in range(frames))
    return write_rgb_video(path, images, size=(height, width), fps=fps, codec=codec, crf=12, bit_rate=4_000_000)


def write_rgb_video(
    path: str | os.PathLike[str],
    images: Iterable[np.ndarray],
    *,
    size: tuple[int, int],
    fps: float,
    codec: str | None = None,
    crf: int = 18,
    bit_rate: int = 400_000,
) -> Path:
    """Encode ``images`` ((H, W, 3) uint8 RGB arrays of ``size``) to ``path`` as mp4, yuv420p, one thread.

    ``codec`` defaults to :func:`pick_codec`; libx264 encodes at constant quality ``crf``, mpeg4 at
    ``bit_rate`` bits per second. Returns the path written, as ``Path``."""
    import av

    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    codec = codec or pick_codec()
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        else:
            stream.bit_rate = bit_rate
            stream.codec_context.thread_count = 1
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out
