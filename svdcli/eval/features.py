"""Feature statistics of one side of a comparison: draw clips from a source, run the network, sum.

Clips are drawn in a seeded order (svdcli.eval.videos.permutation) until `samples` usable ones
are measured; each video's random offset comes from its own generator (seed, index), so neither
the worker count nor the batch size changes which frames are measured. Reading runs on
`workers` threads (PyAV and OpenCV release the GIL), the network on the device, in batches.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from svdcli.errors import SvdError
from svdcli.eval.frechet import FeatureStats
from svdcli.eval.videos import VideoRef, list_videos, permutation, read_clip

Progress = Callable[[int, int], None]   # (done, total)


@dataclass
class Side:
    """One side's measurement: where from, how many, what was skipped, the statistics."""

    source: str
    available: int
    sampling: str
    seed: int
    stats: FeatureStats = field(default_factory=FeatureStats)
    skipped: dict[str, int] = field(default_factory=dict)
    cached: bool = False

    @property
    def measured(self) -> int:
        return self.stats.count

    def record(self) -> dict:
        return {"source": self.source, "videos_available": self.available, "measured": self.measured,
                "sampling": self.sampling, "seed": self.seed, "skipped": self.skipped,
                "statistics_from_cache": self.cached}


def draw(refs: list[VideoRef], samples: int, frames: int, stride: int, sampling: str, seed: int,
         skip_bad: bool, workers: int, skipped: dict[str, int]) -> Iterator[np.ndarray]:
    """Up to `samples` clips (T, H, W, 3) uint8 in the seeded order (0 = every usable video)."""
    order = permutation(len(refs), seed)
    want = samples or len(refs)
    done = 0

    def one(i: int):
        rng = np.random.default_rng([seed, int(i)])
        try:
            return read_clip(refs[i], frames, stride, sampling, rng)
        except SvdError as exc:
            if not skip_bad:
                raise SvdError(f"{exc} (pass --skip-bad to leave unreadable videos out, counted)") from None
            return exc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(order), max(8, 2 * workers)):
            for clip in pool.map(one, order[start:start + max(8, 2 * workers)]):
                if isinstance(clip, SvdError):
                    skipped["unreadable"] = skipped.get("unreadable", 0) + 1
                elif clip is None:
                    skipped["too short"] = skipped.get("too short", 0) + 1
                else:
                    yield clip
                    done += 1
                    if done == want:
                        return


def check_source(src: str | Path, samples: int) -> list[VideoRef]:
    """The videos of `src`, refused before any work when there are none or fewer than `samples`."""
    refs = list_videos(src)
    if samples and samples > len(refs):
        raise SvdError(f"{src} holds {len(refs)} videos, fewer than --samples {samples}; pass --samples "
                       f"{len(refs)} or fewer (below the protocol's count the value is not comparable)")
    return refs


def measure(src: str | Path, samples: int, frames: int, stride: int, sampling: str, seed: int,
            embed: Callable[[list[np.ndarray]], torch.Tensor], batch: int, *, skip_bad: bool = False,
            workers: int = 2, progress: Progress | None = None, refs: list[VideoRef] | None = None) -> Side:
    """Statistics of `embed` over `samples` clips of `src` (or of `refs`, a chosen part of it); too few
    usable clips is an SvdError."""
    refs = refs if refs is not None else check_source(src, samples)
    side = Side(str(src), len(refs), sampling, seed)
    want = samples or len(refs)
    pending: list[np.ndarray] = []
    for clip in draw(refs, samples, frames, stride, sampling, seed, skip_bad, workers, side.skipped):
        pending.append(clip)
        if len(pending) == batch:
            side.stats.add(embed(pending).double().cpu().numpy())
            pending = []
            if progress:
                progress(side.measured, want)
    if pending:
        side.stats.add(embed(pending).double().cpu().numpy())
    if progress:
        progress(side.measured, want)
    if side.measured < (samples or 2):
        why = ", ".join(f"{n} {reason}" for reason, n in side.skipped.items()) or "none skipped"
        raise SvdError(f"{src}: only {side.measured} of the {want} clips asked for could be measured ({why}; "
                       f"a clip needs {(frames - 1) * stride + 1} frames); pass --samples {side.measured} or fewer")
    return side


def i3d_embedder(net, proto, device: torch.device) -> Callable[[list[np.ndarray]], torch.Tensor]:
    """Clips -> (B, 400) logits under the protocol's resize and value range."""
    from svdcli.eval.protocol import to_network_input

    def embed(clips: list[np.ndarray]) -> torch.Tensor:
        clips = torch.from_numpy(np.stack(clips)).to(device)   # uint8 to the device: resize there
        x = to_network_input(clips, proto.size, proto.resize, proto.value_range)
        with torch.inference_mode():
            return net(x).float()

    return embed


def pick_device(device: str | None) -> torch.device:
    from svdcli.weights import pick_device as pick

    return torch.device(pick(device or "auto"))


# --- cached statistics (a real set measured once) ---------------------------------------------
def save_stats(path: Path, side: Side, key: dict) -> None:
    """Write a side's statistics with the protocol key they were measured under (.npz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **side.stats.to_arrays(), key=json.dumps(key, sort_keys=True, default=str),
             side=json.dumps(side.record(), default=str))
    tmp.replace(path)


def load_stats(path: Path, key: dict) -> Side | None:
    """A cached side when its protocol key matches `key`; another key is an SvdError naming the difference."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            saved = json.loads(str(data["key"]))
            record = json.loads(str(data["side"]))
            stats = FeatureStats.from_arrays({k: data[k] for k in ("count", "total", "outer")})
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise SvdError(f"{path}: not a statistics file written by svd eval ({type(exc).__name__}); delete it") from None
    want = json.loads(json.dumps(key, sort_keys=True, default=str))
    diff = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
    if diff:
        raise SvdError(f"{path} was measured under another protocol ({diff[0]}: {saved.get(diff[0])!r}, now "
                       f"{want.get(diff[0])!r}); delete it or pass another --real-stats")
    side = Side(record["source"], record["videos_available"], record["sampling"], record["seed"], stats,
                record.get("skipped", {}), cached=True)
    return side
