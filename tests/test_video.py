"""Video loading/sampling (lmms-eval's LLaVA adapters) and LLaVA-NeXT's SigLIP preprocessing."""

from __future__ import annotations

import pickle
import warnings
from functools import partial, reduce

import numpy as np
import pytest
import torch
from PIL import Image

from llava import video as video_mod
from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor
from llava.video import (
    VideoClip,
    VideoDecodeError,
    load_video,
    sample_frame_indices,
    synthetic_frame,
    write_synthetic_video,
)

N_FRAMES, FPS, HW = 48, 8, (96, 128)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """48 frames, 8 fps (6.00 s), 96x128, with a scene cut at frame 24."""
    return write_synthetic_video(tmp_path_factory.mktemp("vid") / "clip.mp4", frames=N_FRAMES, size=HW, fps=FPS)


# --------------------------------------------------------------------------- decoding
def test_decode_count_shape_dtype(clip_path):
    clip = load_video(clip_path, max_frames=N_FRAMES)
    assert isinstance(clip, VideoClip)
    assert clip.total_frames == N_FRAMES
    assert clip.fps == pytest.approx(FPS)
    assert clip.duration == pytest.approx(N_FRAMES / FPS)
    assert clip.frames.shape == (N_FRAMES, *HW, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.indices == list(range(N_FRAMES))
    assert clip.path == str(clip_path)


def test_decoded_frames_are_the_requested_ones(clip_path):
    """decord's random access returns the frames asked for (closest to their own source frame)."""
    clip = load_video(clip_path, max_frames=7)
    ref = np.stack([synthetic_frame(i, frames=N_FRAMES, size=HW) for i in range(N_FRAMES)]).astype(np.float32)
    mae = np.abs(clip.frames.astype(np.float32)[:, None] - ref[None]).mean(axis=(2, 3, 4))  # (7, 48)
    assert mae.argmin(axis=1).tolist() == clip.indices
    # RGB order and the scene cut: the two halves have different mean colours
    first, second = ref[: N_FRAMES // 2].mean(axis=(0, 1, 2)), ref[N_FRAMES // 2 :].mean(axis=(0, 1, 2))
    assert np.abs(first - second).max() > 10
    assert np.abs(clip.frames[0].astype(np.float32).mean(axis=(0, 1)) - ref[0].mean(axis=(0, 1))).max() < 3


def test_ov_uniform_sampling(clip_path):
    clip = load_video(clip_path)  # OV default: 32 uniform frames
    expected = np.linspace(0, N_FRAMES - 1, 32, dtype=int).tolist()
    assert clip.indices == expected
    assert all(type(i) is int for i in clip.indices)
    assert clip.frames.shape == (32, *HW, 3)
    for n in (1, 5, 100, 10_000):
        assert sample_frame_indices(10_000, max_frames=n) == np.linspace(0, 9_999, n, dtype=int).tolist()


def test_llava_video_fps_sampling(clip_path):
    clip = load_video(clip_path, max_frames=64, mode="fps")
    assert clip.indices == [0, 8, 16, 24, 32, 40]  # 1 frame per second at 8 fps
    assert clip.timestamps == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # more 1-fps frames than max_frames -> uniform
    clip = load_video(clip_path, max_frames=4, mode="fps")
    assert clip.indices == [0, 15, 31, 47] == np.linspace(0, 47, 4, dtype=int).tolist()
    # force_sample -> uniform even when few
    clip = load_video(clip_path, max_frames=10, mode="fps", force_sample=True)
    assert clip.indices == np.linspace(0, 47, 10, dtype=int).tolist()
    # pure sampler: 29.97 fps -> stride round(29.97) = 30; 600 frames -> 20 frames; 6000 -> uniform 64
    assert sample_frame_indices(600, max_frames=64, fps=29.97, mode="fps") == list(range(0, 600, 30))
    assert (
        sample_frame_indices(6000, max_frames=64, fps=29.97, mode="fps") == np.linspace(0, 5999, 64, dtype=int).tolist()
    )
    assert sample_frame_indices(60, max_frames=64, fps=30, mode="fps", target_fps=2) == list(range(0, 60, 15))
    assert sample_frame_indices(100, max_frames=5, fps=25, mode="fps") == list(range(0, 100, 25))  # 4 <= 5


def test_time_instruction_exact(clip_path):
    clip = load_video(clip_path, max_frames=4, mode="fps", force_sample=True)
    assert clip.indices == [0, 15, 31, 47]
    assert clip.timestamps == [0.0, 15 / 8, 31 / 8, 47 / 8]
    assert clip.time_instruction() == (
        "The video lasts for 6.00 seconds, and 4 frames are uniformly sampled from it. "
        "These frames are located at 0.00s,1.88s,3.88s,5.88s."
        "Please answer the following questions related to this video."
    )
    clip = load_video(clip_path, max_frames=64, mode="fps")
    assert clip.time_instruction() == (
        "The video lasts for 6.00 seconds, and 6 frames are uniformly sampled from it. "
        "These frames are located at 0.00s,1.00s,2.00s,3.00s,4.00s,5.00s."
        "Please answer the following questions related to this video."
    )


def test_fewer_frames_than_requested_warns_and_repeats(tmp_path):
    path = write_synthetic_video(tmp_path / "short.mp4", frames=5, size=(32, 48), fps=5)
    with pytest.warns(UserWarning, match=r"only 5 frames.*repeat"):
        clip = load_video(path, max_frames=8)
    assert clip.indices == np.linspace(0, 4, 8, dtype=int).tolist() == [0, 0, 1, 1, 2, 2, 3, 4]
    assert clip.frames.shape == (8, 32, 48, 3)
    np.testing.assert_array_equal(clip.frames[0], clip.frames[1])
    with pytest.warns(UserWarning, match="only 3 frames"):
        sample_frame_indices(3, max_frames=4)
    with warnings.catch_warnings():  # the 1-fps path does not repeat, so no warning
        warnings.simplefilter("error")
        assert sample_frame_indices(5, max_frames=8, fps=5, mode="fps") == [0]
        load_video(path, max_frames=8, mode="fps")


@pytest.mark.parametrize("size", [(32, 48), (24, 16), (32, 40)])
def test_narrow_videos_decode(tmp_path, size):
    """decord 0.6 reports (H, W, 4)/(H, W, 6) for some narrow widths (padded row stride); we repair it."""
    path = write_synthetic_video(tmp_path / "narrow.mp4", frames=6, size=size, fps=6)
    clip = load_video(path, max_frames=6)
    assert clip.frames.shape == (6, *size, 3)
    ref = np.stack([synthetic_frame(i, frames=6, size=size) for i in range(6)]).astype(np.float32)
    mae = np.abs(clip.frames.astype(np.float32)[:, None] - ref[None]).mean(axis=(2, 3, 4))
    assert mae.argmin(axis=1).tolist() == list(range(6))
    assert mae.diagonal().max() < 8


# --------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        load_video(missing)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoDecodeError, match="x.mp4") as info:
        load_video(bad)
    assert isinstance(info.value, ValueError)
    assert "Invalid data" in str(info.value)  # FFmpeg's diagnosis is carried in the message


def test_truncated_file(tmp_path, clip_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip_path.read_bytes()[:2000])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        load_video(cut)


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoDecodeError, match=r"empty.mp4.*0 bytes"):
        load_video(empty)


def test_zero_frames(tmp_path, monkeypatch, clip_path):
    class NoFrames:
        def __len__(self):
            return 0

        def get_avg_fps(self):
            return 8.0

    monkeypatch.setattr(video_mod, "_open_reader", lambda path, num_threads: NoFrames())
    with pytest.raises(VideoDecodeError, match="0 frames"):
        load_video(clip_path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_given_as_video(tmp_path, suffix):
    img = tmp_path / f"still{suffix}"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    with pytest.raises(VideoDecodeError, match="image.*where a video is expected"):
        load_video(img)
    disguised = tmp_path / "still.mp4"  # PNG bytes under a video suffix
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(disguised, format="PNG")
    with pytest.raises(VideoDecodeError, match="image.*where a video is expected"):
        load_video(disguised)


def test_bad_arguments(clip_path):
    with pytest.raises(ValueError, match="max_frames"):
        load_video(clip_path, max_frames=0)
    with pytest.raises(ValueError, match="max_frames"):
        sample_frame_indices(10, max_frames=0)
    with pytest.raises(ValueError, match="mode"):
        load_video(clip_path, mode="middle")
    with pytest.raises(ValueError, match="fps"):
        sample_frame_indices(10, max_frames=4, mode="fps")
    with pytest.raises(ValueError, match="total_frames"):
        sample_frame_indices(0, max_frames=4)
    with pytest.raises(ValueError, match="even"):
        write_synthetic_video(clip_path.parent / "odd.mp4", size=(33, 48))


# --------------------------------------------------------------------------- processor
def _llava_next_reference(images, size=(384, 384)):
    """LLaVA-NeXT's SigLipImageProcessor.preprocess, built from the same transformers functions."""
    from transformers.image_transforms import convert_to_rgb, normalize, rescale, resize, to_channel_dimension_format
    from transformers.image_utils import ChannelDimension, PILImageResampling, to_numpy_array

    first = ChannelDimension.FIRST
    images = [images] if isinstance(images, Image.Image) else [to_numpy_array(im) for im in images]
    transforms = [
        convert_to_rgb,
        to_numpy_array,
        partial(resize, size=size, resample=PILImageResampling.BICUBIC, data_format=first),
        partial(rescale, scale=1 / 255, data_format=first),
        partial(normalize, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), data_format=first),
        partial(to_channel_dimension_format, channel_dim=first, input_channel_dim=first),
    ]
    return np.stack(reduce(lambda x, f: [*map(f, x)], transforms, images))


def test_processor_attributes_and_pickle():
    proc = SigLipImageProcessor()
    assert proc.image_mean == (0.5, 0.5, 0.5) and proc.image_std == (0.5, 0.5, 0.5)
    assert proc.size == (384, 384) and proc.crop_size == {"height": 384, "width": 384}
    assert proc.resample == Image.Resampling.BICUBIC
    assert proc.rescale_factor == pytest.approx(1 / 255) and proc.data_format == "channels_first"
    clone = pickle.loads(pickle.dumps(proc))
    assert clone.size == proc.size and clone.resample == proc.resample

    class VisionCfg:  # SiglipVisionConfig-like
        image_size = 56

    tiny = SigLipImageProcessor.from_config(VisionCfg())
    assert tiny.size == (56, 56) and tiny.crop_size == {"height": 56, "width": 56}
    from transformers import SiglipVisionConfig

    assert SigLipImageProcessor.from_config(SiglipVisionConfig(image_size=28)).size == (28, 28)
    custom = SigLipImageProcessor(size=(32, 48), image_mean=(0.1, 0.2, 0.3), image_std=(1, 2, 3))
    assert custom(np.zeros((10, 10, 3), np.uint8))["pixel_values"].shape == (1, 3, 32, 48)


def test_processor_on_video_frames(clip_path):
    clip = load_video(clip_path, max_frames=4)
    proc = SigLipImageProcessor()
    out = proc.preprocess(clip.frames, return_tensors="pt")["pixel_values"]
    assert isinstance(out, torch.Tensor)
    assert out.shape == (4, 3, 384, 384) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0 and out.std() > 0.05

    # hand computation for one frame: PIL bicubic -> /255 -> (x - 0.5) / 0.5
    frame = clip.frames[2]
    resized = np.asarray(Image.fromarray(frame).resize((384, 384), Image.Resampling.BICUBIC))
    hand = ((resized.astype(np.float64) / 255).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
    np.testing.assert_allclose(out[2].numpy(), hand.transpose(2, 0, 1), rtol=0, atol=1e-6)

    # bit for bit with LLaVA-NeXT's pipeline (transformers' resize/rescale/normalize)
    np.testing.assert_array_equal(out.numpy(), _llava_next_reference(clip.frames))

    # the (T, H, W, 3) stack, a list of frames, and PIL frames agree; __call__ == preprocess
    as_list = proc([f for f in clip.frames], return_tensors="pt")["pixel_values"]
    as_pil = proc.preprocess([Image.fromarray(f) for f in clip.frames], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(as_list, out, rtol=0, atol=0)
    torch.testing.assert_close(as_pil, out, rtol=0, atol=0)
    single = proc.preprocess(Image.fromarray(frame))["pixel_values"]
    assert isinstance(single, np.ndarray) and single.shape == (1, 3, 384, 384)
    np.testing.assert_array_equal(single[0], out[2].numpy())


def test_processor_bad_input():
    proc = SigLipImageProcessor()
    with pytest.raises(TypeError, match="uint8"):
        proc.preprocess(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="PIL image"):
        proc.preprocess("frame.png")
    with pytest.raises(ValueError, match="no images"):
        proc.preprocess([])
