"""`svd eval ucf101`: zero-shot UCF-101 FVD, the protocol SVD, Video LDM, PYoCo and Make-A-Video report.

What the papers fix, and the defaults here (each a flag; docs/eval.md cites the sources):
- generated videos: 10,000, classes drawn in the proportions of the training split (Make-A-Video;
  Video LDM "10k model samples, following Make-A-Video"; VideoPoet after VDM);
- one prompt per class: the class name in words ("ApplyEyeMakeup" -> "apply eye makeup") through
  `--template`, or `--prompts FILE` (JSON {class: prompt}), e.g. PYoCo's per-class prompts, which
  SVD and VideoPoet use;
- real statistics: 10,000 training-split videos, the central 16 frames at the native 25 fps
  (VideoPoet, after TGAN2), one clip per video;
- 16 frames per clip, I3D Kinetics-400 features under the `styleganv` FVD protocol (224x224).
An image-to-video checkpoint is conditioned on the first frame of a real video of the class
(`--condition first-frame`); a text-conditioned one on the prompt (`--condition prompt`).
Generated frames go to I3D from memory, never through a video codec.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError
from svdcli.eval.protocol import FVDProtocol
from svdcli.eval.videos import VideoRef, list_videos

NAME = re.compile(r"v_([A-Za-z0-9]+)_g\d+_c\d+")


@dataclass
class UCFRequest:
    checkpoint: Path
    data: Path
    protocol: FVDProtocol
    i3d: Path
    samples: int = 10_000
    real_samples: int = 10_000
    split: Path | None = None            # trainlist01.txt: the videos (and class shares) of the training split
    classes: str = "train"               # train: the split's class proportions; uniform: equal counts
    prompts: Path | None = None
    template: str = "{}"
    condition: str = "prompt"            # prompt | first-frame
    seed: int = 0
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    batch: int = 8
    device: str | None = None
    videos: Path | None = None           # keep the generated videos here (.npy)
    real_stats: Path | None = None
    out: Path | None = None


def class_of(path: str) -> str:
    match = NAME.search(Path(path).stem)
    if not match:
        raise SvdError(f"{path}: not a UCF-101 file name (v_<Class>_gNN_cNN.avi)")
    return match.group(1)


def class_words(name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup', 'YoYo' -> 'yo yo'."""
    return " ".join(w.lower() for w in re.findall(r"[A-Z][a-z0-9]*|[a-z0-9]+", name))


def split_videos(req: UCFRequest) -> list[VideoRef]:
    refs = list_videos(req.data)
    if req.split is None:
        return refs
    if not Path(req.split).is_file():
        raise SvdError(f"--split {req.split}: no such file (UCF-101's trainlist01.txt ...)")
    wanted = {Path(line.split()[0]).stem for line in Path(req.split).read_text().splitlines() if line.strip()}
    chosen = [r for r in refs if Path(r.path).stem in wanted]
    if not chosen:
        raise SvdError(f"--split {req.split} names none of the {len(refs)} videos in {req.data}")
    return chosen


def class_counts(classes: list[str], samples: int, mode: str) -> dict[str, int]:
    """Generated videos per class: proportional to `classes` (largest remainders) or uniform."""
    names = sorted(set(classes))
    share = np.array([classes.count(c) if mode == "train" else 1 for c in names], np.float64)
    exact = share / share.sum() * samples
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: samples - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def class_prompts(names: list[str], req: UCFRequest) -> dict[str, str]:
    import json

    if req.prompts is None:
        return {n: req.template.format(class_words(n)) for n in names}
    table = json.loads(Path(req.prompts).read_text())
    missing = [n for n in names if n not in table]
    if missing:
        raise SvdError(f"--prompts {req.prompts} has no prompt for class {missing[0]} ({len(missing)} missing)")
    return {n: table[n] for n in names}


def run_ucf101(req: UCFRequest, progress=None, log=print) -> dict:
    from svdcli.eval.features import i3d_embedder, load_stats, measure, pick_device, save_stats
    from svdcli.eval.frechet import FeatureStats, frechet_from_stats
    from svdcli.eval.networks import load_network
    from svdcli.eval.protocol import network_record, sample_warning, write_result

    if req.condition not in ("prompt", "first-frame"):
        raise SvdError(f"--condition {req.condition!r}: choose prompt or first-frame")
    if req.classes not in ("train", "uniform"):
        raise SvdError(f"--classes {req.classes!r}: choose train or uniform")
    refs = split_videos(req)
    labels = [class_of(r.path) for r in refs]
    counts = class_counts(labels, req.samples, req.classes)
    prompts = class_prompts(sorted(counts), req)
    if req.real_samples > len(refs):
        raise SvdError(f"{req.data}: {len(refs)} videos, fewer than --real-samples {req.real_samples}")
    proto, device = req.protocol, pick_device(req.device)
    net, kind = load_network(req.i3d, "i3d")
    embed = i3d_embedder(net.to(device), proto, device)
    network = network_record(req.i3d, kind)
    key = {"protocol": proto.describe(), "network_sha256": network["sha256"], "data": str(req.data),
           "split": str(req.split), "real_samples": req.real_samples, "seed": req.seed}
    real = load_stats(req.real_stats, key) if req.real_stats else None
    if real is None:
        bar = (lambda done, total: progress("real videos", done, total)) if progress else None
        real = measure(req.data, req.real_samples, proto.frames, proto.stride, proto.real_sampling, req.seed, embed,
                       req.batch, progress=bar, refs=refs)
        if req.real_stats:
            save_stats(req.real_stats, real, key)
    fake = generate(req, refs, labels, counts, prompts, embed, progress)
    value = frechet_from_stats(real.stats, fake, unbiased=proto.unbiased)
    warnings = [w for w in [sample_warning("FVD", {"real": real.measured, "fake": fake.count}, 10_000)] if w]
    for w in warnings:
        log(f"warning: {w}")
    protocol = {"fvd": proto.describe(), "generated": req.samples, "classes": req.classes, "condition": req.condition,
                "prompts": str(req.prompts) if req.prompts else f"class name in words, template {req.template!r}",
                "split": str(req.split) if req.split else "every video in --data", "steps": req.steps,
                "size": [req.width, req.height], "seeds": f"video k samples with seed {req.seed} + k"}
    result = {"metric": "fvd_ucf101_zero_shot", "value": value, "protocol": protocol, "network": network,
              "real": real.record(), "fake": {"measured": fake.count, "per_class": counts},
              "class_prompts": prompts, "warnings": warnings}
    return write_result(req.out, result)


def generate(req: UCFRequest, refs, labels, counts, prompts, embed, progress) -> "FeatureStats":
    """Sample every video of the class plan and add its first frames' I3D features."""
    from svdcli.eval.frechet import FeatureStats
    from svdcli.eval.videos import read_video
    from svdcli.sample.pipeline import SampleOptions, VideoPipeline

    pipe = VideoPipeline.from_checkpoint(req.checkpoint, device=req.device)
    stats, pending = FeatureStats(), []
    plan = [c for c in sorted(counts) for _ in range(counts[c])]
    rng = np.random.default_rng(req.seed)
    by_class = {c: [r for r, lab in zip(refs, labels) if lab == c] for c in counts}
    for k, name in enumerate(plan):
        extra = {"prompt": prompts[name]} if req.condition == "prompt" else {}
        image = None
        if req.condition == "first-frame":
            image = read_video(by_class[name][int(rng.integers(len(by_class[name])))], 1)[0][0]
        opts = SampleOptions(frames=req.protocol.frames * req.protocol.stride, steps=req.steps, width=req.width,
                             height=req.height, seed=req.seed + k, **extra)
        video = pipe.generate(image, opts, warn=lambda m: None).frames
        clip = video[: (req.protocol.frames - 1) * req.protocol.stride + 1: req.protocol.stride]
        if req.videos is not None:
            req.videos.mkdir(parents=True, exist_ok=True)
            np.save(req.videos / f"{k:05d}_{name}.npy", video)
        pending.append(clip)
        if len(pending) == req.batch or k == len(plan) - 1:
            stats.add(embed(pending).double().cpu().numpy())
            pending = []
        if progress:
            progress("generated videos", k + 1, len(plan))
    return stats
