"""`svd eval fid`: per-frame FID between the frames of a real and a generated video set.

Frames are drawn per video in the seeded video order (svdcli.eval.videos.permutation): up to
`frames_per_video` distinct frames of each (by default as few as reach `samples` in total),
chosen at random by the video's own generator, until `samples` frames per side. Video LDM
(Blattmann et al. 2023, appendix) draws 10k random frames of each set; that is the default.
Each frame goes through the clean resize and the FID Inception (svdcli.eval.inception).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from svdcli.errors import SvdError
from svdcli.eval.features import Side, check_source, pick_device
from svdcli.eval.frechet import frechet_from_stats
from svdcli.eval.videos import permutation, read_or_skip

REFERENCE_SAMPLES = 10_000


@dataclass
class FIDRequest:
    real: Path
    fake: Path
    inception: Path
    samples: int = REFERENCE_SAMPLES    # frames per side
    frames_per_video: int | None = None
    seed: int = 0
    batch: int = 32
    device: str | None = None
    skip_bad: bool = False
    out: Path | None = None


def measure_frames(src: Path, samples: int, per_video: int | None, seed: int, net, device,
                   batch: int, skip_bad: bool, progress: Callable[[int, int], None] | None) -> Side:
    """Inception statistics of `samples` frames of `src` (module docstring)."""
    from svdcli.eval.inception import to_network_input

    refs = check_source(src, 0)
    per_video = per_video or max(1, math.ceil(samples / len(refs)))
    side = Side(str(src), len(refs), f"{per_video} random frames per video", seed)
    pending: list[np.ndarray] = []

    def flush():
        with torch.inference_mode():
            side.stats.add(net(to_network_input(pending).to(device)).double().cpu().numpy())
        pending.clear()

    for i in permutation(len(refs), seed):
        read = read_or_skip(refs[i], skip_bad)
        if read is None:
            side.skipped["unreadable"] = side.skipped.get("unreadable", 0) + 1
            continue
        video = read[0]
        rng = np.random.default_rng([seed, int(i)])
        take = min(per_video, len(video), samples - side.measured - len(pending))
        pending.extend(video[j] for j in sorted(rng.choice(len(video), take, replace=False)))
        if len(pending) >= batch:
            flush()
        if progress:
            progress(side.measured + len(pending), samples)
        if side.measured + len(pending) >= samples:
            break
    if pending:
        flush()
    if side.measured < samples:
        raise SvdError(f"{src}: only {side.measured} frames of the {samples} asked for ({len(refs)} videos, at most "
                       f"{per_video} frames each); pass --samples {side.measured} or --frames-per-video")
    return side


def run_fid(req: FIDRequest, progress=None, log=print) -> dict:
    from svdcli.eval.networks import load_network
    from svdcli.eval.protocol import network_record, sample_warning, write_result

    for src in (req.real, req.fake):
        check_source(src, 0)
    device = pick_device(req.device)
    net, kind = load_network(req.inception, "inception")
    net = net.to(device)
    sides = {}
    for label, src, seed in (("real", req.real, req.seed), ("fake", req.fake, req.seed + 1)):
        bar = (lambda done, total, label=label: progress(label, done, total)) if progress else None
        sides[label] = measure_frames(src, req.samples, req.frames_per_video, seed, net, device, req.batch,
                                      req.skip_bad, bar)
    value = frechet_from_stats(sides["real"].stats, sides["fake"].stats, unbiased=False)
    warnings = [w for w in [sample_warning("FID", {k: s.measured for k, s in sides.items()}, REFERENCE_SAMPLES)] if w]
    for w in warnings:
        log(f"warning: {w}")
    protocol = {"features": "Inception-v3 (TF 2015-12-05 graph) pool3, 2048-d", "size": 299,
                "resize": "clean: PIL bicubic per channel in float (clean-fid)", "normalisation": "(x - 128) / 128",
                "covariance": "biased (N)", "frames_per_side": req.samples, "reference_samples": REFERENCE_SAMPLES}
    result = {"metric": "fid", "value": value, "protocol": protocol, "network": network_record(req.inception, kind),
              "real": sides["real"].record(), "fake": sides["fake"].record(), "device": str(device),
              "warnings": warnings}
    return write_result(req.out, result)
