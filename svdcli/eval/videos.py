"""Where the videos of an evaluation come from, and which frames of each are measured.

A source (SRC) is one of:
- a folder of videos, searched recursively: video files (.mp4 .avi .mov .mkv .webm .gif),
  `.npy` arrays (T, H, W, 3) uint8, or folders of numbered frames (.png / .jpg), one per video.
  Arrays and png frames are lossless: the way to hand generated videos over without the
  compression an mp4 adds (which alone moves FVD by hundreds; docs/eval.md);
- a shard folder written by `svd pack` (or one .tar): every sample's frames (mp4 or npy);
- a manifest (.parquet) of `svd curate`: its kept clips (every ok clip before `filter` ran).

A clip is `frames` frames taken every `stride`-th frame: from the first frame (`start`, how
generated videos are read) or from an offset drawn per video (`random`, StyleGAN-V's real-data
sampling), or the centred window (`center`, VideoPoet's UCF-101 reals). Videos too short for a
clip are skipped and counted (StyleGAN-V's `discard_short_videos`), never padded or looped.
Which videos are measured is a seeded permutation of the sorted list, so the same seed and the
same folder measure the same clips.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
SAMPLINGS = ("start", "random", "center")


@dataclass(frozen=True)
class VideoRef:
    """One video of a source: a file, an array, a frame folder, a shard sample or a manifest clip."""

    kind: str                # file | npy | frames | shard | clip
    path: str
    key: str = ""            # shard sample key
    start: float = 0.0       # manifest clip start (s)
    end: float = 0.0         # manifest clip end (s, exclusive)
    fps: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.path}:{self.key}" if self.key else (
            f"{self.path}@{self.start:.3f}-{self.end:.3f}s" if self.kind == "clip" else self.path)


@dataclass
class Drawn:
    """The clips a source gave: (N, T, H, W, 3) uint8 each, what was skipped and why."""

    refs: list[VideoRef] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count


def list_videos(src: str | Path) -> list[VideoRef]:
    """Every video of a source (module docstring), sorted; a source with none is an error."""
    src = Path(src)
    if not src.exists():
        raise SvdError(f"{src}: no such folder or file")
    if src.suffix == ".parquet":
        refs = _manifest_clips(src)
    elif src.suffix == ".tar" or (src.is_dir() and any(src.glob("*.tar"))):
        refs = _shard_samples(sorted(src.glob("*.tar")) if src.is_dir() else [src])
    elif src.is_dir():
        refs = _folder_videos(src)
    elif src.suffix.lower() in VIDEO_SUFFIXES:
        refs = [VideoRef("file", str(src))]
    else:
        raise SvdError(f"{src}: not a folder of videos, a shard folder or .tar, or a manifest (.parquet)")
    if not refs:
        raise SvdError(f"{src} holds no videos ({', '.join(VIDEO_SUFFIXES)}, .npy arrays, frame folders, "
                       "shards or manifest clips)")
    return refs


def _folder_videos(root: Path) -> list[VideoRef]:
    refs = []
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if path.is_file() and suffix in VIDEO_SUFFIXES:
            refs.append(VideoRef("file", str(path)))
        elif path.is_file() and suffix == ".npy":
            refs.append(VideoRef("npy", str(path)))
        elif path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir()):
            refs.append(VideoRef("frames", str(path)))
    return refs


def _shard_samples(tars: list[Path]) -> list[VideoRef]:
    refs = []
    for tar in tars:
        try:
            with tarfile.open(tar) as archive:
                names = archive.getnames()
        except (tarfile.TarError, OSError) as exc:
            raise SvdError(f"{tar}: not a readable shard ({type(exc).__name__}); rerun `svd pack`") from None
        keys = {n.split(".", 1)[0] for n in names if n.endswith((".mp4", ".npy")) and not n.endswith("latents.npy")}
        refs.extend(VideoRef("shard", str(tar), key) for key in sorted(keys))
    return refs


def _manifest_clips(path: Path) -> list[VideoRef]:
    from svdcli.manifest.io import read_manifest

    rows = read_manifest(path).to_pylist()
    keep = [r for r in rows if (r.get("keep") if r.get("keep") is not None else r.get("status", "ok") == "ok")
            and r.get("start_time") is not None]
    return [VideoRef("clip", r["video_path"], start=float(r["start_time"]), end=float(r["end_time"]),
                     fps=float(r["fps"])) for r in keep]


def read_video(ref: VideoRef, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """All frames (or the first `max_frames`) of a video as (T, H, W, 3) uint8, and its frame rate."""
    if ref.kind == "npy":
        frames = np.load(ref.path, mmap_mode="r", allow_pickle=False)
        _check_array(frames, ref)
        return np.ascontiguousarray(frames[:max_frames]), 0.0
    if ref.kind == "frames":
        import cv2

        files = sorted(p for p in Path(ref.path).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)[:max_frames]
        frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
        if any(f is None for f in frames):
            raise SvdError(f"{ref.path}: a frame cannot be read as an image")
        return np.stack([f[..., ::-1] for f in frames]), 0.0
    if ref.kind == "shard":
        return _shard_frames(ref, max_frames), 0.0
    return _decoded(ref, max_frames)


def read_or_skip(ref: VideoRef, skip_bad: bool) -> tuple[np.ndarray, float] | None:
    """`read_video(ref)`, or None for an unreadable video when `skip_bad` (else one clear SvdError)."""
    try:
        return read_video(ref)
    except Exception as exc:  # noqa: BLE001 - any reader failure: named in one line, or skipped
        if not skip_bad:
            raise SvdError(f"{ref.name}: cannot be read as a video ({' '.join(str(exc).split())[:120]}); "
                           "pass --skip-bad to leave unreadable videos out") from None
        return None


def _check_array(frames: np.ndarray, ref: VideoRef) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise SvdError(f"{ref.path}: an array video must be (T, H, W, 3) uint8, not {frames.shape} {frames.dtype}")


def _shard_frames(ref: VideoRef, max_frames: int | None) -> np.ndarray:
    from svdcli.shards.frames import decode_mp4, decode_npy

    with tarfile.open(ref.path) as archive:
        for suffix in (".npy", ".mp4"):
            try:
                data = archive.extractfile(f"{ref.key}{suffix}").read()
            except KeyError:
                continue
            frames = decode_npy(data) if suffix == ".npy" else decode_mp4(data, stop=max_frames)
            return frames[:max_frames]
    raise SvdError(f"{ref.name}: the shard sample has no frames")


def _decoded(ref: VideoRef, max_frames: int | None) -> tuple[np.ndarray, float]:
    """Frames of a video file (or of a manifest clip's span of one), decoded in order."""
    import av

    frames, fps = [], 0.0
    with av.open(ref.path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or ref.fps
        start_pts = None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            start_pts = t if start_pts is None else start_pts
            t -= start_pts
            if ref.kind == "clip" and t < ref.start - 1e-4:
                continue
            if ref.kind == "clip" and t >= ref.end - 1e-4:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise SvdError(f"{ref.name}: no decodable frames")
    return np.stack(frames), fps


def clip_window(length: int, frames: int, stride: int, sampling: str, rng: np.random.Generator) -> int | None:
    """First frame of the clip inside a video of `length` frames, or None when it is too short."""
    span = (frames - 1) * stride + 1
    if length < span:
        return None
    if sampling == "start":
        return 0
    if sampling == "center":
        return (length - span) // 2
    return int(rng.integers(0, length - span + 1))


def take_clip(video: np.ndarray, frames: int, stride: int, sampling: str, rng: np.random.Generator) -> np.ndarray | None:
    """The clip (frames, H, W, 3) of `video`, or None when the video is too short."""
    first = clip_window(len(video), frames, stride, sampling, rng)
    return None if first is None else video[first:first + (frames - 1) * stride + 1:stride]


def read_clip(ref: VideoRef, frames: int, stride: int, sampling: str, rng: np.random.Generator) -> np.ndarray | None:
    """One clip of `ref` under the sampling rule, None when too short; an unreadable video is an SvdError."""
    try:
        stop = (frames - 1) * stride + 1 if sampling == "start" else None
        video, _ = read_video(ref, stop)
    except SvdError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder / reader failure names the file, in one line
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SvdError(f"{ref.name}: cannot be read as a video ({first})") from None
    return take_clip(video, frames, stride, sampling, rng)


def permutation(n: int, seed: int) -> np.ndarray:
    """The seeded order in which a source's videos are drawn."""
    return np.random.default_rng(seed).permutation(n)
