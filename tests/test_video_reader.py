"""Decoding real video files: errors, frame counts, pixel formats, backends, timestamps, buckets."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lvg.data.reader import (
    FRAMEPACK_BUCKETS_640,
    VideoReadError,
    available_backends,
    bucket_size,
    open_video,
    resize_to_bucket,
)
from lvg.media import write_video

BACKENDS = [b for b in ("pyav", "decord") if b in available_backends()]


def frames_of(n: int, h: int = 36, w: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, h, w, 3)`` uint8: random colours, so any misplaced frame or pixel shows."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def write_av(
    path: Path, frames: np.ndarray, codec: str, pix_fmt: str, *, in_fmt: str = "rgb24", options: dict | None = None,
    container_options: dict | None = None, pts_ms: list[int] | None = None, rate: int = 8,
) -> Path:
    """Write with PyAV directly, for what :func:`write_video` does not make (gray, yuv, faststart, VFR)."""
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = pix_fmt
        s.options = options or {}
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format=in_fmt)
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            c.mux(s.encode(vf))
        c.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    frames = frames_of(40)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, frames, fps=8)  # lossless libx264rgb, with B-frames: presentation order != decode order
    return path, frames


# ---- errors


@pytest.mark.parametrize("backend", [None, *BACKENDS])
@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
        (lambda p: p.write_text("this is not a video\n" * 50), "not a video file"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["missing", "zero-bytes", "text-file", "directory"],
)
def test_unreadable_files_name_path_and_reason(tmp_path, backend, make, reason):
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(VideoReadError, match=reason) as err:
        open_video(path, backend)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("backend", [None, *BACKENDS])
def test_truncated_mp4_without_index(tmp_path, clip, backend):
    data = clip[0].read_bytes()  # written without faststart: the index (moov) is at the end
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="truncated or incomplete mp4"):
        open_video(path, backend)


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        c.mux(s.encode(frame))
        c.mux(s.encode())
    with pytest.raises(VideoReadError, match="no video stream"):
        open_video(path)


def test_truncated_faststart_reports_real_count(tmp_path):
    """The header declares 40 frames; only those fully present are reported, and they decode exactly."""
    frames = frames_of(40, seed=1)
    full = write_av(tmp_path / "full.mp4", frames, "libx264rgb", "rgb24", options={"qp": "0"},
                    container_options={"movflags": "faststart"})
    data = full.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.6)])
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 40  # the container still claims all of them
    for backend in (None, "pyav"):
        with open_video(path, backend) as reader:
            n = reader.info.num_frames
            assert 15 < n < 40 and reader.info.backend == "pyav"
            np.testing.assert_array_equal(reader.read(range(n)).numpy(), frames[:n])
            with pytest.raises(VideoReadError, match=rf"cut\.mp4: frame {n} is out of range \(the video has {n}"):
                reader.read([n])
            assert sum(len(c) for _, c in reader.iter_chunks(chunk=7)) == n
    if "decord" in BACKENDS:
        with pytest.raises(VideoReadError, match="decord cannot read it.*backend='pyav'"):
            open_video(path, "decord")


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_and_unknown_backend(clip, backend):
    with open_video(clip[0], backend) as reader:
        with pytest.raises(VideoReadError, match="frame 40 is out of range"):
            reader.read([3, 40])
        with pytest.raises(VideoReadError, match="frame -1 is out of range"):
            reader.read([-1])
    with pytest.raises(ValueError, match="unknown backend 'opencv'"):
        open_video(clip[0], "opencv")


# ---- decoding


@pytest.mark.parametrize("backend", BACKENDS)
def test_lossless_roundtrip_and_info(clip, backend):
    path, frames = clip
    with open_video(path, backend) as reader:
        assert (reader.info.num_frames, reader.info.fps, reader.info.width, reader.info.height) == (40, 8.0, 64, 36)
        assert reader.info.backend == backend and reader.info.duration == 5.0
        np.testing.assert_array_equal(reader.read(range(40)).numpy(), frames)
        # Random access, unsorted with repeats, after a sequential read and again from the start.
        order = [39, 2, 17, 2, 0, 38, 16]
        np.testing.assert_array_equal(reader.read(order).numpy(), frames[order])
        np.testing.assert_array_equal(reader.read([5]).numpy(), frames[[5]])
        assert reader.read([]).shape == (0, 36, 64, 3)


def test_backends_agree(clip):
    if len(BACKENDS) < 2:
        pytest.skip("decord not installed")
    path, _ = clip
    with open_video(path, "decord") as a, open_video(path, "pyav") as b:
        assert a.info.num_frames == b.info.num_frames and a.info.fps == b.info.fps
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        for (i, x), (j, y) in zip(a.iter_chunks(chunk=6, stride=3), b.iter_chunks(chunk=6, stride=3), strict=True):
            assert i == j
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        order = [31, 7, 7, 22]
        torch.testing.assert_close(a.read(order), b.read(order), rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_chunks_covers_strided_frames(clip, backend):
    path, frames = clip
    with open_video(path, backend) as reader:
        chunks = list(reader.iter_chunks(chunk=4, stride=3))
    assert [i for i, _ in chunks] == [0, 12, 24, 36]
    np.testing.assert_array_equal(torch.cat([c for _, c in chunks]).numpy(), frames[::3])


@pytest.mark.skipif("decord" not in BACKENDS, reason="decord not installed")
def test_decord_width_bug_is_reported_at_open(tmp_path):
    frames = frames_of(3, 32, 48)  # decord 0.6 cannot copy out 48-pixel-wide frames
    write_video(tmp_path / "w48.mp4", frames, fps=8)
    with pytest.raises(VideoReadError, match="w48.mp4: decord cannot read it.*try backend='pyav'"):
        open_video(tmp_path / "w48.mp4", "decord")
    with open_video(tmp_path / "w48.mp4") as reader:  # the default backend reads it
        assert reader.info.backend == "pyav"
        np.testing.assert_array_equal(reader.read(range(3)).numpy(), frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_chunks_prefetch_and_early_stop(clip, backend):
    path, frames = clip
    with open_video(path, backend) as reader:
        plain = list(reader.iter_chunks(chunk=8, prefetch=False))
        chunks = reader.iter_chunks(chunk=8)
        first, x = next(chunks)  # the next chunk is being decoded in the background now
        chunks.close()  # stopping early waits for it, so the reader is free again
        np.testing.assert_array_equal(reader.read([39, 0]).numpy(), frames[[39, 0]])
        again = list(reader.iter_chunks(chunk=8))
    assert first == 0 and torch.equal(x, plain[0][1])
    assert [i for i, _ in again] == [i for i, _ in plain] == [0, 8, 16, 24, 32]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again, plain, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_chunks_scaled_in_the_decoder(tmp_path, backend):
    # Smooth frames (a moving gradient) so that the decoder's scaler and torch's agree closely.
    y, x = np.mgrid[0:72, 0:96]
    frames = np.stack([np.stack([x * 2 + t, y * 3, (x + y + 5 * t) % 256], -1) for t in range(10)]).astype(np.uint8)
    write_video(tmp_path / "smooth.mp4", frames, fps=8)
    with open_video(tmp_path / "smooth.mp4", backend) as reader:
        chunks = list(reader.iter_chunks(chunk=4, stride=2, size=(18, 24)))
        full = reader.read(range(0, 10, 2))
    assert [i for i, _ in chunks] == [0, 8] and [c.shape for _, c in chunks] == [(4, 18, 24, 3), (1, 18, 24, 3)]
    expected = resize_to_bucket(full, (18, 24)).float()  # same aspect: a plain resize
    assert (torch.cat([c for _, c in chunks]).float() - expected).abs().mean() < 2.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_frame_video(tmp_path, backend):
    frames = frames_of(1, 16, 32)
    write_video(tmp_path / "one.mp4", frames, fps=24)
    with open_video(tmp_path / "one.mp4", backend) as reader:
        assert (reader.info.num_frames, reader.info.fps) == (1, 24.0)
        np.testing.assert_array_equal(reader.read([0]).numpy(), frames)
        np.testing.assert_array_equal(reader.read_range(0.0).numpy(), frames)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_odd_size_becomes_rgb(tmp_path, backend):
    grey = np.random.default_rng(2).integers(0, 256, size=(5, 33, 47), dtype=np.uint8)
    path = write_av(tmp_path / "grey.mkv", grey, "ffv1", "gray", in_fmt="gray")  # lossless grayscale
    with open_video(path, backend) as reader:
        assert (reader.info.width, reader.info.height) == (47, 33)
        x = reader.read(range(5)).numpy()
    np.testing.assert_array_equal(x, np.repeat(grey[..., None], 3, axis=-1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_yuv_odd_size_becomes_rgb(tmp_path, backend, pix_fmt):
    # Flat colour patches (an odd-sized frame, chroma subsampled in 420): RGB comes back within YUV rounding.
    colours = np.array([[200, 30, 60], [20, 180, 90], [90, 90, 250]], dtype=np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (3, 35, 51, 3)).copy()
    path = write_av(tmp_path / f"{pix_fmt}.mkv", frames, "ffv1", pix_fmt)
    with open_video(path, backend) as reader:
        assert (reader.info.width, reader.info.height) == (51, 35)
        x = reader.read(range(3)).numpy().astype(int)
    assert np.abs(x - frames).max() <= 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate_by_timestamp(tmp_path, backend):
    pts_ms = [0, 100, 150, 400, 450, 460, 1000]
    frames = frames_of(7, 16, 32, seed=3)
    path = write_av(tmp_path / "vfr.mp4", frames, "libx264rgb", "rgb24", options={"qp": "0"}, pts_ms=pts_ms, rate=30)
    with open_video(path, backend) as reader:
        np.testing.assert_allclose(reader.timestamps, np.array(pts_ms) / 1000)
        assert reader.info.fps == pytest.approx(6.0)  # 6 intervals in 1 s, not the declared 30
        np.testing.assert_array_equal(reader.read_range(0.14, 0.455).numpy(), frames[2:5])
        np.testing.assert_array_equal(reader.read_range(0.45).numpy(), frames[4:])
        with pytest.raises(VideoReadError, match=r"no frame in \[0.47, 0.9\) s"):
            reader.read_range(0.47, 0.9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_range_constant_rate(clip, backend):
    path, frames = clip
    with open_video(path, backend) as reader:  # 8 fps: frame i at i / 8 s
        np.testing.assert_array_equal(reader.read_range(1.0, 2.0).numpy(), frames[8:16])
        np.testing.assert_array_equal(reader.read_range(4.5).numpy(), frames[36:])
        assert reader.range_indices(0.01, 0.26) == (1, 3)


@pytest.mark.skipif(importlib.util.find_spec("torchcodec") is None, reason="torchcodec not installed")
def test_torchcodec_agrees_with_pyav(clip):
    path, frames = clip
    with open_video(path, "torchcodec") as reader:
        assert reader.info.num_frames == 40
        np.testing.assert_array_equal(reader.read([0, 39, 20]).numpy(), frames[[0, 39, 20]])


# ---- buckets


@pytest.mark.parametrize(
    "hw, bucket",
    [
        ((720, 1280), (480, 832)),  # 16:9 -> 832 x 480 (metrics: 15360 vs 48640 for 864 x 448)
        ((1080, 1920), (480, 832)),
        ((1280, 720), (832, 480)),
        ((512, 512), (640, 608)),  # a tie between 608 x 640 and 640 x 608: FramePack keeps the later
        ((480, 640), (544, 704)),  # 4:3 (10240 vs 46080 for 576 x 672)
        ((100, 1000), (416, 960)),  # beyond the widest bucket
        ((64, 64), (640, 608)),
    ],
)
def test_bucket_size_framepack_rule(hw, bucket):
    assert bucket_size(*hw, FRAMEPACK_BUCKETS_640) == bucket


def test_bucket_size_matches_the_reference_loop():
    def find_nearest_bucket(h: int, w: int) -> tuple[int, int]:  # FramePack's rule, written as its loop
        best, best_metric = None, float("inf")
        for bh, bw in FRAMEPACK_BUCKETS_640:
            if abs(h * bw - w * bh) <= best_metric:
                best, best_metric = (bh, bw), abs(h * bw - w * bh)
        return best

    rng = np.random.default_rng(0)
    for h, w in rng.integers(16, 4000, size=(300, 2)):
        assert bucket_size(int(h), int(w)) == find_nearest_bucket(int(h), int(w))
    with pytest.raises(ValueError, match="no buckets"):
        bucket_size(10, 10, [])


def test_resize_to_bucket_covers_then_centre_crops():
    frames = torch.zeros(2, 100, 200, 3, dtype=torch.uint8)
    frames[:, :, 50:150] = 200  # the centre square; the outer quarters are black
    out = resize_to_bucket(frames, (40, 40))  # cover: 100x200 -> 40x80, crop the centre 40x40
    assert out.shape == (2, 40, 40, 3) and out.dtype == torch.uint8
    assert (out[:, :, 1:-1] == 200).all()
    out = resize_to_bucket(frames, (60, 200))  # cover: -> 100x200 (no resize), crop rows 20..80
    torch.testing.assert_close(out, frames[:, 20:80])
    assert resize_to_bucket(frames, (100, 200)) is frames
    with pytest.raises(ValueError, match="uint8"):
        resize_to_bucket(frames.float(), (10, 10))


def test_frame_strip_lays_out_evenly_spaced_frames_and_lvg_strip_writes_it(tmp_path, capsys):
    from PIL import Image

    from lvg.cli import main
    from lvg.media import frame_strip, write_video

    long = np.stack([np.full((4, 6, 3), t, np.uint8) for t in range(9)])  # frame t has value t
    short = long[:5] + 100
    strip = frame_strip([long, short], frames=3, scale=2, gap=1)
    assert strip.shape == (2 * 8 + 1, 3 * 12 + 2, 3)
    assert [strip[0, c * 13, 0] for c in range(3)] == [0, 4, 8]  # first, middle, last of the long video
    assert [strip[9, c * 13, 0] for c in range(3)] == [100, 102, 104]  # the short one over its own length
    assert (strip[8] == 255).all() and (strip[:, 12] == 255).all()  # the gaps
    with pytest.raises(ValueError, match="every video must be uint8"):
        frame_strip([long, long[:, :2]])

    write_video(tmp_path / "a.mp4", long, fps=8)
    main(["strip", str(tmp_path / "a.mp4"), "--frames", "3", "--scale", "2", "--output", str(tmp_path / "s.png")])
    assert "1 rows x 3 frames" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "s.png")), frame_strip([long], 3, 2))
