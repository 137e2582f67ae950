"""Small broken and odd media files, made on the spot for the fault tests (no fixtures on disk).

`make(kind, folder)` writes one file (or link, or folder) of a kind and returns its path. Every
kind is a few KB and takes milliseconds: H.264 via PyAV's libx264, MPEG-TS, mp3 (with an
attached cover picture), AAC in mp4, PNG, random bytes, links.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 24
SIZE = (160, 96)  # width, height


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8: one slowly panning shot (no cut inside)."""
    from svdcli.video.synth import Shot, render_shot

    return render_shot(Shot(n, seed=seed, speed=(0.5, 0.0)), SIZE[1], SIZE[0])


def mp4_bytes(n: int, seed: int = 0, faststart: bool = False, fmt: str = "mp4") -> bytes:
    """An n-frame H.264 video at FPS in `fmt` (mp4 or mpegts), as bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # faststart rewrites the file: a path, not a buffer
        target = Path(tmp) / f"v.{'ts' if fmt == 'mpegts' else 'mp4'}"
        _encode(str(target), n, seed, fmt, {"movflags": "faststart"} if faststart else {})
        return target.read_bytes()


def cut_off(video: Path, folder: Path, keep: float = 0.6) -> tuple[Path, Path]:
    """(the video remuxed with its index first, that file cut off after `keep` of its bytes): an
    upload that stopped part-way still opens, and stops decoding where its data ends."""
    import av

    intact = Path(folder) / "faststart.mp4"
    with av.open(str(video)) as src, av.open(str(intact), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    damaged = Path(folder) / "cut_off.mp4"
    data = intact.read_bytes()
    damaged.write_bytes(data[:int(len(data) * keep)])
    return intact, damaged


def _encode(target: str, n: int, seed: int, fmt: str, options: dict, hole_after: int | None = None) -> None:
    """`n` frames of one shot; with `hole_after`, no frame for 2 s after that many (PTS jump forward)."""
    import av

    with av.open(target, "w", format=fmt, options=options) as c:
        stream = c.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "12"}
        for i, arr in enumerate(_frames(n, seed)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i + (2 * FPS if hole_after is not None and i >= hole_after else 0)
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)


def _audio(path: Path, fmt: str, codec: str, cover: bool = False) -> Path:
    """A second of silence in `fmt`; with `cover`, an attached PNG picture stream (as mp3 tags have)."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=22050)
        stream.layout = "mono"
        if cover:
            pic = c.add_stream("png", rate=1)
            pic.width, pic.height, pic.pix_fmt = 32, 32, "rgb24"
            pic.disposition = av.stream.Disposition.attached_pic
            frame = av.VideoFrame.from_ndarray(_frames(1)[0, :32, :32].copy(), format="rgb24")
            for p in pic.encode(frame):
                c.mux(p)
            for p in pic.encode():
                c.mux(p)
        samples = stream.frame_size or 1152
        for i in range(22050 // samples + 1):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32 if codec == "aac" else np.int16),
                                               format="fltp" if codec == "aac" else "s16p", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 22050, i * samples, Fraction(1, 22050)
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)
    return path


def _moov_at(data: bytes) -> tuple[int, int]:
    """(offset, size) of the top-level moov box of an mp4."""
    at = 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind == b"moov":
            return at, size
        at += size
    raise ValueError("no moov box")


def make(kind: str, folder: Path) -> Path:
    """Write one odd input of `kind` into `folder`; returns its path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a note, not a video\n" * 20)
    elif kind == "png":
        Image.fromarray(_frames(1)[0]).save(path, format="PNG")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(3).bytes(16384))
    elif kind == "truncated":  # moov at the end (the default layout), file cut halfway: no index
        data = mp4_bytes(48)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "no_moov":
        data = mp4_bytes(48)
        at, size = _moov_at(data)
        path.write_bytes(data[:at] + data[at + size:])
    elif kind == "half_moov":
        data = mp4_bytes(48, faststart=True)
        at, size = _moov_at(data)
        path.write_bytes(data[: at + size // 2])
    elif kind == "mp3_cover":
        path = _audio(folder / f"{kind}.mp3", "mp3", "mp3", cover=True)
    elif kind == "audio_only":
        path = _audio(path, "mp4", "aac")
    elif kind == "missing":
        pass
    elif kind == "symlink_loop":
        os.symlink(folder / f"{kind}_b.mp4", path)
        os.symlink(path, folder / f"{kind}_b.mp4")
    elif kind in ("one_frame", "two_frames"):
        path.write_bytes(mp4_bytes(1 if kind == "one_frame" else 2))
    elif kind == "short_real":  # 23 frames, 0.96 s: a real clip just under a 1 s --min-length
        path.write_bytes(mp4_bytes(23))
    elif kind == "joined_ts":  # two MPEG-TS files end to end: the second's timestamps restart
        path = folder / f"{kind}.ts"
        path.write_bytes(mp4_bytes(36, seed=1, fmt="mpegts") + mp4_bytes(36, seed=2, fmt="mpegts"))
    elif kind == "hole":  # 24 frames, 2 s without a frame, 24 frames (a paused recording)
        _encode(str(path), 48, 0, "mp4", {}, hole_after=24)
    elif kind == "good":
        path.write_bytes(mp4_bytes(48))
    else:
        raise ValueError(kind)
    return path
