"""Manifest clips -> WebDataset samples: frame times, one decoding pass per video, sample bytes.

Frame rule: a sample stores the frames at t = start + k/F (k = 0, 1, ...) while t < end, at most
`frames` of them, where F is --fps (or the source rate; a source slower than --fps keeps its own
rate). Times are seconds from the video's first frame (the manifest convention); the frame shown
at t is the last one whose timestamp is <= t (svdcli/video/seek.py), so variable frame rate
sources are sampled by time, not by frame count.
"""
from __future__ import annotations

import functools
import json
import re

import numpy as np

from svdcli.curate import stages as registry
from svdcli.shards.micro_conditioning import MotionBuckets, fps_id_for
from svdcli.shards.frames import (
    center_crop, cover_size, encode_mp4, encode_npy, rotate_display, sample_rate, sample_times,
)
from svdcli.shards.pack_config import PackConfig
MAX_GROUP = 16  # most clips of one video decoded in one pass
ORBIT_CAMERA = "orbit_camera"  # manifest column of rendered orbits (svdcli/render/manifest.py): poses.json
GROUP_BYTES = 256 << 20  # ... and at most this many bytes of decoded frames held at once


class ClipSkipped(Exception):
    """A clip left out of its shard; `kind` is the short reason counted in stats.json."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


# the manifest's captions besides `caption` (the recipe's choice), carried in the json as `captions`
CAPTION_KINDS = ("caption_source", "caption_coca", "caption_video", "caption_summary")


@functools.cache
def score_columns() -> tuple[str, ...]:
    """The manifest scores every sample's json carries (`scores`): each stage declares its own."""
    return registry.score_columns()


def sample_key(clip_id: str) -> str:
    """WebDataset key of a clip: its id with every character outside [A-Za-z0-9_-] made '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", clip_id)


def clip_times(clip: dict, cfg: PackConfig) -> tuple[list[float], float]:
    """(frame times, sample fps) of a clip; raises ClipSkipped when too few frames fit."""
    rate = sample_rate(clip["fps"], cfg.fps)
    times = sample_times(clip["start_time"], clip["end_time"], rate, cfg.frames)
    if len(times) < cfg.min_frames:
        raise ClipSkipped("too_short", f"{len(times)} frames at {rate:g} fps < --min-frames {cfg.min_frames}")
    return times, rate


def read_frames(clip: dict, times: list[float], cfg: PackConfig) -> np.ndarray:
    """Frames of `clip`'s video at sorted `times`, display-rotated and cropped: (N, H, W, 3) uint8."""
    from svdcli.video.seek import read_frames_at

    out_h, out_w = cfg.size
    rotation = int(clip.get("rotation") or 0) % 360
    swap = rotation in (90, 270)  # coded frames are stored sideways
    disp_w, disp_h = (clip["height"], clip["width"]) if swap else (clip["width"], clip["height"])
    dec_w, dec_h = cover_size(disp_w, disp_h, out_h, out_w)
    try:
        frames = read_frames_at(clip["video_path"], times, size=(dec_h, dec_w) if swap else (dec_w, dec_h),
                                threads=1)
    except Exception as exc:  # noqa: BLE001 - any decoder failure skips the clip, with its reason
        raise ClipSkipped("decode_error", f"{type(exc).__name__}: {exc}") from exc
    if len(frames) != len(times):
        raise ClipSkipped("decode_error", f"decoded {len(frames)} of {len(times)} frames")
    return np.ascontiguousarray(center_crop(rotate_display(frames, rotation), out_h, out_w))


def group_size(cfg: PackConfig) -> int:
    """Clips of one video decoded together: MAX_GROUP, fewer when their frames would pass GROUP_BYTES."""
    h, w = cfg.size
    return max(1, min(MAX_GROUP, GROUP_BYTES // (cfg.frames * h * w * 3)))


def video_clip_frames(clips: list[dict], cfg: PackConfig) -> dict[str, tuple | ClipSkipped]:
    """Frames of clips of ONE video in one decoding pass: clip_id -> (frames, times, fps) or skip.

    Clips close in time share the decoding between them (no seek back to a keyframe per clip).
    When the shared pass fails, each clip is read alone so only the broken ones are skipped.
    """
    results: dict[str, tuple | ClipSkipped] = {}
    plans = []
    for clip in clips:
        try:
            plans.append((clip, *clip_times(clip, cfg)))
        except ClipSkipped as skip:
            results[clip["clip_id"]] = skip
    step = group_size(cfg)
    for i in range(0, len(plans), step):
        results.update(_read_group(plans[i:i + step], cfg))
    return results


def _read_group(plans: list[tuple[dict, list[float], float]], cfg: PackConfig) -> dict:
    if not plans:
        return {}
    flat = sorted((t, i, k) for i, (_, times, _) in enumerate(plans) for k, t in enumerate(times))
    try:
        frames = read_frames(plans[0][0], [t for t, _, _ in flat], cfg)  # (sum of N_i, H, W, 3)
    except ClipSkipped as skip:
        if len(plans) == 1:
            return {plans[0][0]["clip_id"]: skip}
        return {k: v for plan in plans for k, v in _read_group([plan], cfg).items()}
    per_clip = [[None] * len(times) for _, times, _ in plans]
    for (_, i, k), frame in zip(flat, frames):
        per_clip[i][k] = frame
    return {clip["clip_id"]: (np.stack(per_clip[i]), times, rate) for i, (clip, times, rate) in enumerate(plans)}


def build_sample(clip: dict, frames: np.ndarray, times: list[float], rate: float, cfg: PackConfig,
                 motion: MotionBuckets, latent: tuple[np.ndarray, dict] | None = None) -> tuple[dict, dict]:
    """One WebDataset sample (extension -> bytes, plus `__key__`) and its index row.

    `latent`: (float16 (N, 4, H/8, W/8) latents of `frames`, their LatentSpec dict), see latents.py.
    """
    key = sample_key(clip["clip_id"])
    cond = {"fps_id": fps_id_for(rate), "motion_bucket_id": motion(clip.get("motion_score"))}
    meta = {
        "clip_id": clip["clip_id"], "key": key, "video_id": clip.get("video_id"),
        "source": clip["video_path"], "start_time": clip["start_time"], "end_time": clip["end_time"],
        "times": [round(t, 6) for t in times], "fps": rate, "source_fps": clip["fps"],
        "num_frames": len(times), "size": list(cfg.size),
        "scores": {k: clip.get(k) for k in score_columns()},
        "caption": clip.get("caption") or "", **cond,
    }
    captions = {k.removeprefix("caption_"): clip[k] for k in CAPTION_KINDS if clip.get(k) is not None}
    if captions:  # every caption the manifest holds, so training can pick another one without repacking
        meta["captions"] = captions
    if latent is not None:
        meta["latents"] = {**latent[1], "shape": list(latent[0].shape)}
    if clip.get(ORBIT_CAMERA):
        meta["camera"] = orbit_camera(clip[ORBIT_CAMERA], times, clip["start_time"], clip["fps"])
    sample = {"__key__": key, "json": json.dumps(meta).encode(), "txt": meta["caption"].encode()}
    if cfg.format in ("mp4", "both"):
        sample["mp4"] = encode_mp4(frames, rate, crf=cfg.crf)
    if cfg.format in ("npy", "both"):
        sample["npy"] = encode_npy(frames)
    if latent is not None:
        sample["latents.npy"] = _npy_bytes(latent[0])
    row = {"clip_id": clip["clip_id"], "key": key, "num_frames": len(times), "fps": rate, **cond}
    return sample, row


def orbit_camera(poses_json: str, times: list[float], start: float, fps: float) -> dict:
    """A rendered orbit's poses.json with `frames` cut to the views packed (view k shows at start + k / fps)."""
    poses = json.loads(poses_json)
    frames = poses.get("frames", [])
    picked = [frames[min(len(frames) - 1, round((t - start) * fps))] for t in times]
    keep = ("object", "elevation_deg", "distance", "fov_deg", "start_azimuth_deg", "resolution", "convention")
    return {**{k: poses[k] for k in keep if k in poses}, "frames": picked}


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
