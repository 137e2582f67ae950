"""`svd eval motion`: does the motion conditioning an i2v model was trained with move its videos?

For every conditioning image, the model samples one video per (--fps-id, --motion-bucket) pair,
all from the image's own seed, so within an image only the conditioning differs. Each video is
then measured by the curation motion stage itself (svdcli.curate.stages.motion.score_clips: the
same frame pairs, Farneback flow, median and camera-motion fit that scored the training clips,
on frames converted by the same gray converter), in memory, before any compression. Reported:
Spearman's rho between the requested motion bucket and the measured motion score (and between
fps_id and the score), the median score per (fps_id, bucket) cell, and with --lora the share
of videos whose camera_motion label is the LoRA's, beside the same share for the base model on
the same images and seeds (what the label is without the LoRA).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from svdcli.errors import SvdError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class MotionRequest:
    checkpoint: Path
    images: Path                         # an image file or a folder of them
    buckets: tuple[int, ...] = (0, 64, 127, 191, 255)
    fps_ids: tuple[int, ...] = (6,)
    seed: int = 0                        # image i samples with seed + i
    frames: int | None = None            # sampling overrides (None: the checkpoint's defaults)
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    lora: Path | None = None
    lora_scale: float = 1.0
    lora_label: str | None = None        # the camera_motion label the LoRA was trained on
    device: str | None = None
    dtype: str = "auto"
    videos: Path | None = None           # keep each sample as .npy (lossless) here
    out: Path | None = None
    extra: dict = field(default_factory=dict)   # more family options, e.g. cond_aug


def conditioning_images(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise SvdError(f"--images {src}: no such image or folder")
    images = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SvdError(f"--images {src}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def measure_motion(frames: np.ndarray, fps: float) -> dict:
    """The motion stage's columns for one in-memory video (T, H, W, 3) uint8 played at `fps`."""
    import av

    from svdcli.curate.stages import motion as stage
    from svdcli.video.gray import GrayConverter

    t, h, w = frames.shape[:3]
    convert = GrayConverter(stage.flow_size(w, h, stage.MotionConfig()))
    gray = np.stack([convert(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")) for f in frames])

    def read(times: list[float]):
        # the frame shown at t is the last one whose time is <= t (the readers' rule)
        index = [min(t - 1, int(np.floor(s * fps + 1e-6))) for s in times]
        return gray[index], [i / fps for i in index]

    clip = {"clip_id": "sample", "start_time": 0.0, "end_time": t / fps, "fps": fps, "num_frames": t}
    row = stage.score_clips([clip], read, stage.MotionConfig())[0]
    if row.get("motion_error"):
        raise SvdError(f"a generated video cannot be scored: {row['motion_error']}")
    return {k: row[k] for k in ("motion_score", "motion_pairs", "camera_motion", "camera_motion_confidence")}


def lora_label(req: MotionRequest) -> str:
    """The label a LoRA must produce: --lora-label, else its file's `camera_motion` metadata."""
    from svdcli.curate.scorers.camera_motion import LABELS

    label = req.lora_label
    if label is None:
        from safetensors import safe_open

        with safe_open(str(req.lora), framework="pt") as f:
            label = (f.metadata() or {}).get("camera_motion")
    if label is None:
        raise SvdError(f"--lora {req.lora}: its file names no camera motion; pass --lora-label "
                       f"({', '.join(LABELS)})")
    if label not in LABELS:
        raise SvdError(f"--lora-label {label!r} is not a camera_motion label ({', '.join(LABELS)})")
    return label


def run_motion_eval(req: MotionRequest, progress: Callable[[str, int, int], None] | None = None,
                    log: Callable[[str], None] = print) -> dict:
    """Sample the grid, measure every video with the motion stage, summarise; returns the result."""
    from svdcli.eval.protocol import write_result
    from svdcli.sample.pipeline import SampleOptions, VideoPipeline

    images = conditioning_images(Path(req.images))
    if req.lora and not Path(req.lora).is_file():
        raise SvdError(f"--lora {req.lora}: no such file")
    label = lora_label(req) if req.lora else None
    pipe = VideoPipeline.from_checkpoint(req.checkpoint, device=req.device, dtype=req.dtype)
    arms = [("base", None)] + ([("lora", [(req.lora, req.lora_scale)])] if req.lora else [])
    grid = [(i, f, b) for i in range(len(images)) for f in req.fps_ids for b in req.buckets]
    samples, done, total = [], 0, len(grid) * len(arms)
    for arm, loras in arms:
        for i, fps_id, bucket in grid:
            opts = SampleOptions(frames=req.frames, steps=req.steps, width=req.width, height=req.height,
                                 seed=req.seed + i, fps_id=fps_id, motion_bucket_id=bucket,
                                 **({"lora": loras} if loras else {}), **req.extra)
            video = pipe.generate(str(images[i]), opts, warn=lambda m: None)
            row = {"image": images[i].name, "seed": req.seed + i, "fps_id": fps_id, "motion_bucket_id": bucket,
                   "arm": arm, "fps": video.fps, "frames": video.num_frames, **measure_motion(video.frames, video.fps)}
            if req.videos is not None:
                req.videos.mkdir(parents=True, exist_ok=True)
                np.save(req.videos / f"{arm}_{images[i].stem}_fps{fps_id}_mb{bucket}.npy", video.frames)
            samples.append(row)
            done += 1
            if progress:
                progress("sampling + motion", done, total)
    result = {"metric": "motion_conditioning", "checkpoint": str(req.checkpoint),
              "protocol": protocol_record(req, images, pipe), **summarise([s for s in samples if s["arm"] == "base"]),
              "samples": samples}
    if label:
        result["lora"] = lora_summary(samples, req, label)
    return write_result(req.out, result)


def protocol_record(req: MotionRequest, images: list[Path], pipe) -> dict:
    from svdcli.curate.stages.motion import MOTION_UNITS, MotionConfig

    return {"motion_stage": dataclasses.asdict(MotionConfig()), "motion_units": MOTION_UNITS,
            "motion_bucket_ids": list(req.buckets), "fps_ids": list(req.fps_ids), "images": len(images),
            "seeds": f"{req.seed} + image index (the same noise for every conditioning value of an image)",
            "frames": req.frames, "steps": req.steps, "size": [req.width, req.height],
            "device": str(pipe.device), "dtype": str(pipe.dtype).replace("torch.", ""),
            "measured_on": "the decoded uint8 frames in memory (no video compression)"}


def summarise(samples: list[dict]) -> dict:
    """Rank correlations of the conditioning with the measured motion, and per-cell medians."""
    from svdcli.eval.stats import spearman

    score = [s["motion_score"] for s in samples]
    cells = []
    for fps_id in sorted({s["fps_id"] for s in samples}):
        for bucket in sorted({s["motion_bucket_id"] for s in samples}):
            cell = [s for s in samples if s["fps_id"] == fps_id and s["motion_bucket_id"] == bucket]
            labels: dict[str, int] = {}
            for s in cell:
                labels[s["camera_motion"]] = labels.get(s["camera_motion"], 0) + 1
            cells.append({"fps_id": fps_id, "motion_bucket_id": bucket, "videos": len(cell),
                          "median_motion_score": float(np.median([s["motion_score"] for s in cell])),
                          "camera_motion": labels})
    return {"spearman_motion_bucket": spearman([s["motion_bucket_id"] for s in samples], score),
            "spearman_fps_id": spearman([s["fps_id"] for s in samples], score),
            "videos": len(samples), "cells": cells}


def lora_summary(samples: list[dict], req: MotionRequest, label: str) -> dict:
    share = {arm: float(np.mean([s["camera_motion"] == label for s in samples if s["arm"] == arm]))
             for arm in ("lora", "base")}
    return {"file": str(req.lora), "scale": req.lora_scale, "label": label, "match_fraction": share["lora"],
            "base_match_fraction": share["base"],
            "videos": sum(s["arm"] == "lora" for s in samples)}
