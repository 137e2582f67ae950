"""`svd eval fvd`: Fréchet Video Distance between a real and a generated set, protocol recorded.

FVD (Unterthiner et al. 2018) is the Fréchet distance (svdcli.eval.frechet) between Gaussians
fitted to I3D Kinetics-400 logits of 16-frame clips. Defaults are StyleGAN-V's `fvd2048_16f`
(protocol `styleganv`, svdcli.eval.protocol): 2048 clips per side, a random 16-frame window of
each real video, the first 16 frames of each generated one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svdcli.eval.features import Progress, Side, check_source, i3d_embedder, load_stats, measure, pick_device, save_stats
from svdcli.eval.frechet import frechet_from_stats
from svdcli.eval.protocol import FVDProtocol, network_record, sample_warning, write_result


@dataclass
class FVDRequest:
    real: Path
    fake: Path
    protocol: FVDProtocol
    i3d: Path                       # converted weights (svdcli.eval.networks.find_weights)
    samples: int = 2048             # per side; 0 = every usable video
    seed: int = 0
    fake_sampling: str = "start"
    batch: int = 8
    workers: int = 2
    device: str | None = None
    skip_bad: bool = False
    real_stats: Path | None = None  # cache of the real side's statistics (.npz)
    out: Path | None = None


def stats_key(req: FVDRequest, network: dict) -> dict:
    """What the real side's statistics depend on: a cache with another key is refused."""
    return {"protocol": req.protocol.describe(), "network_sha256": network["sha256"], "source": str(req.real),
            "samples": req.samples, "seed": req.seed}


def run_fvd(req: FVDRequest, progress: Progress | None = None, log=print) -> dict:
    """Measure both sides, compute FVD, write the result JSON (when `req.out`); returns the result."""
    from svdcli.eval.networks import load_network

    proto, device = req.protocol, pick_device(req.device)
    for src in (req.real, req.fake):   # both sides' mistakes fail before any video is measured
        check_source(src, req.samples)
    net, kind = load_network(req.i3d, "i3d")
    net = net.to(device)
    network = network_record(req.i3d, kind)
    embed = i3d_embedder(net, proto, device)

    def side(src: Path, sampling: str, seed: int, label: str) -> Side:
        return measure(src, req.samples, proto.frames, proto.stride, sampling, seed, embed, req.batch,
                       skip_bad=req.skip_bad, workers=req.workers,
                       progress=(lambda done, total: progress(label, done, total)) if progress else None)

    key = stats_key(req, network)
    real = load_stats(req.real_stats, key) if req.real_stats else None
    if real is None:
        real = side(req.real, proto.real_sampling, req.seed, "real")
        if req.real_stats:
            save_stats(req.real_stats, real, key)
    fake = side(req.fake, req.fake_sampling, req.seed + 1, "fake")
    value = frechet_from_stats(real.stats, fake.stats, unbiased=proto.unbiased)
    warnings = [w for w in [sample_warning("FVD", {"real": real.measured, "fake": fake.measured},
                                           proto.reference_samples), _mp4_warning(req.fake)] if w]
    for w in warnings:
        log(f"warning: {w}")
    result = {"metric": "fvd", "value": value, "protocol": proto.describe(), "network": network,
              "real": real.record(), "fake": {**fake.record()}, "device": str(device), "warnings": warnings}
    return write_result(req.out, result)


def _mp4_warning(fake: Path) -> str | None:
    """Generated videos handed over as lossy files: the compression moves FVD (docs/eval.md)."""
    lossy = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
    path = Path(fake)
    if path.is_file():
        found = path.suffix.lower() in lossy
    elif path.is_dir() and not any(path.glob("*.tar")):
        found = next((True for p in path.rglob("*") if p.suffix.lower() in lossy), False)
    else:
        return None
    return ("the generated videos are lossy-compressed files: the compression alone moves FVD; write them "
            "as .npy arrays or png frames for a number that measures the model") if found else None
