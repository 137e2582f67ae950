"""Training loader over `svd pack` shards: (B, T, C, H, W) videos in [-1, 1] + SVD conditioning.

    loader = make_loader("shards/", batch_size=8, num_frames=14, stride=1, num_workers=2, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for video, cond in loader:  # video (B, T, C, H, W) float32; cond["fps_id"] (B,) ...

Frames travel as uint8 from the workers (a quarter of the bytes of float32 through shared
memory, collation and the host-to-device copy) and become float in [-1, 1] after the copy to
`device`, where the conversion is one cheap kernel.

Order of work in one epoch:
1. the shard list is shuffled with (seed, epoch), the same on every rank;
2. rank r takes shards r, r + world_size, ... and DataLoader worker w of n takes every n-th of
   those, so every shard is read by exactly one worker of one rank per epoch (shuffling before
   the split also gives each rank different shards every epoch);
3. samples pass through a shuffle buffer seeded by (seed, epoch, rank, worker);
4. each sample's T frames start at a random offset drawn from (seed, epoch, key), so the window a
   clip gets does not depend on worker count or order.
With `resampled=True` each worker instead draws shards with replacement forever (for step-based
training); `set_epoch` still changes the draws. Shards differ in size (skipped clips, the last
shard), so in an epoch-based multi-GPU run ranks can get different numbers of batches: with
DDP/DeepSpeed use `resampled=True` and a fixed number of steps (`pack_stats(folder)["samples"]`
gives the epoch size), so no rank waits forever for another.

`fps_id` is recomputed for the stride: frames stored at F fps and taken every s-th are shown at
F/s fps, so fps_id = round(F/s) - 1 (see svdcli/shards/micro_conditioning.py). A clip shorter than
(T - 1) * stride + 1 frames uses the largest stride that fits; a clip with fewer than T frames
is skipped with a warning, as is a sample that fails to decode or whose json lacks one of
META_KEYS (e.g. `fps`). Each item's cond["skipped"] is the number of bad samples its worker
passed over since its previous item, so a trainer can count them (TrainStream does). Shards are read with webdataset, so anything it opens works: local
paths, brace patterns ("shards/{000000..000009}.tar"), "pipe:" commands, http(s) URLs.
"""
from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from svdcli.errors import SvdError
from svdcli.shards.micro_conditioning import fps_id_for
from svdcli.shards.frames import decode_mp4, decode_npy, resize_crop


META_KEYS = ("num_frames", "fps", "motion_bucket_id", "clip_id")  # a sample's json without one is skipped


@dataclass
class LoaderConfig:
    num_frames: int = 14  # T
    stride: int = 1  # take every stride-th stored frame
    size: tuple[int, int] | None = None  # (H, W) to resize + center crop to; None keeps the stored size
    shuffle: int = 1000  # sample shuffle buffer per worker; 0 keeps shard and sample order
    seed: int = 0
    resampled: bool = False  # draw shards with replacement, endlessly
    latents: bool = False  # also return the stored VAE latents (`svd pack --latents`) as cond["latents"]


def expand_urls(urls: str | os.PathLike | list) -> list[str]:
    """A shard folder, a brace pattern, 'a::b' lists or a list of any of those -> shard URLs."""
    import braceexpand

    if isinstance(urls, (list, tuple)):
        return [u for item in urls for u in expand_urls(item)]
    text = str(urls)
    if os.path.isdir(text):
        found = sorted(glob.glob(os.path.join(text, "[0-9]" * 6 + ".tar")))
        if not found:
            raise FileNotFoundError(f"no shards (000000.tar ...) in {text}; run `svd pack` first")
        return found
    return [u for part in text.split("::") for u in braceexpand.braceexpand(part)]


def split_shards(urls: list[str], epoch: int, seed: int, shuffle: bool, rank: int, world_size: int,
                 worker: int, num_workers: int) -> list[str]:
    """The shards one worker of one rank reads in `epoch` (each shard exactly once overall)."""
    order = list(urls)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    return order[rank::world_size][worker::num_workers]


def dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def choose_window(n: int, num_frames: int, stride: int, rng: random.Random) -> tuple[int, int] | None:
    """(start, stride) of T frames among n stored ones; the stride shrinks to fit; None if n < T."""
    if n < num_frames:
        return None
    if num_frames > 1:
        stride = max(1, min(stride, (n - 1) // (num_frames - 1)))
    span = (num_frames - 1) * stride + 1
    return rng.randrange(n - span + 1), stride


class ShardDataset(IterableDataset):
    """Yields (video (T, C, H, W) uint8, cond dict) per sample; see the module docstring."""

    def __init__(self, urls, cfg: LoaderConfig, rank: int | None = None, world_size: int | None = None,
                 epoch: int = 0):
        super().__init__()
        self.urls = expand_urls(urls)
        if not self.urls:
            raise FileNotFoundError(f"no shards match {urls!r}")
        self.cfg = cfg
        self.rank, self.world_size = dist_info(rank, world_size)
        # shared memory, so persistent DataLoader workers see set_epoch() made in the parent
        self._epoch = multiprocessing.get_context("spawn").Value("q", epoch, lock=False)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shards, samples and frame windows for this epoch (call before iterating)."""
        self._epoch.value = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        import webdataset as wds

        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        stream_seed = f"{self.cfg.seed}:{epoch}:{self.rank}:{worker}"
        if self.cfg.resampled:
            shards = _resample(self.urls, random.Random(stream_seed))
        else:
            mine = split_shards(self.urls, epoch, self.cfg.seed, self.cfg.shuffle > 0,
                                self.rank, self.world_size, worker, num_workers)
            shards = ({"url": u} for u in mine)
        samples = wds.tarfile_to_samples(handler=wds.warn_and_continue)(shards)
        if self.cfg.shuffle > 0:
            samples = shuffle_buffer(samples, self.cfg.shuffle, random.Random(stream_seed))
        skipped = 0
        for sample in samples:
            item = self.decode(sample, epoch)
            if item is None:
                skipped += 1
                continue
            item[1]["skipped"] = skipped  # bad samples this worker passed over since its previous item
            skipped = 0
            yield item

    def decode(self, sample: dict, epoch: int = 0) -> tuple[torch.Tensor, dict] | None:
        """Raw sample (bytes by extension) -> (video (T, C, H, W) uint8, cond), or None to skip it."""
        key = sample.get("__key__", "?")
        if self.cfg.latents and "latents.npy" not in sample:
            # not skipped like a broken sample: every sample of such a pack lacks them
            raise SvdError(f"sample {key} has no latents.npy: repack with `svd pack --latents VAE_SOURCE`, "
                           "or train with data.latents=false")
        try:
            meta = json.loads(sample["json"])
            missing = [k for k in META_KEYS if k not in meta]
            if missing:
                warnings.warn(f"skipping sample {key}: its json has no {', '.join(missing)}")
                return None
            n = int(meta["num_frames"])
            rng = random.Random(hashlib.sha1(f"{self.cfg.seed}:{epoch}:{key}".encode()).digest())
            window = choose_window(n, self.cfg.num_frames, self.cfg.stride, rng)
            if window is None:
                warnings.warn(f"skipping sample {key}: {n} frames < num_frames {self.cfg.num_frames}")
                return None
            start, stride = window
            stop = start + (self.cfg.num_frames - 1) * stride + 1
            frames = decode_npy(sample["npy"]) if "npy" in sample else decode_mp4(sample["mp4"], stop=stop)
            frames = frames[start:stop:stride]  # (T, H, W, C) uint8
            if len(frames) != self.cfg.num_frames:
                raise ValueError(f"decoded {len(frames)} frames, expected {self.cfg.num_frames}")
            latents = None
            if self.cfg.latents:
                latents = decode_npy(sample["latents.npy"])[start:stop:stride]  # (T, 4, h, w) float16
                if latents.shape[0] != self.cfg.num_frames:
                    raise ValueError(f"{latents.shape[0]} latents for {self.cfg.num_frames} frames")
            if self.cfg.size is not None:
                if latents is not None and tuple(frames.shape[1:3]) != tuple(self.cfg.size):
                    raise SvdError(f"sample {key} is stored at {frames.shape[1]}x{frames.shape[2]} but training "
                                   f"asks for {self.cfg.size[0]}x{self.cfg.size[1]}: stored latents cannot be "
                                   "resized; train at the packed size or repack")
                frames = resize_crop(frames, *self.cfg.size)
            cond = _conditioning(meta, key, start, stride)
        except SvdError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad sample must not stop training
            warnings.warn(f"skipping sample {key}: {type(exc).__name__}: {exc}")
            return None
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)
        if latents is not None:
            cond["latents"] = torch.from_numpy(np.ascontiguousarray(latents))  # same frames as `video`
        return video, cond


def _conditioning(meta: dict, key: str, start: int, stride: int) -> dict:
    """A sample's conditioning from its json; frames shown every `stride`-th are at fps / stride.
    `elevation_deg` is the camera elevation of a rendered orbit (`svd render orbits`), NaN otherwise."""
    camera = meta.get("camera") or {}
    return {"fps_id": fps_id_for(float(meta["fps"]) / stride), "motion_bucket_id": int(meta["motion_bucket_id"]),
            "caption": str(meta.get("caption") or ""), "clip_id": str(meta["clip_id"]), "key": key,
            "frame_start": start, "frame_stride": stride,
            "elevation_deg": float(camera.get("elevation_deg", float("nan")))}


def _resample(urls: list[str], rng: random.Random):
    """Shards drawn with replacement, forever."""
    while True:
        yield {"url": rng.choice(urls)}


def shuffle_buffer(samples, size: int, rng: random.Random):
    """Yield samples in random order through a buffer of `size` (webdataset-style shuffle)."""
    buf = []
    for sample in samples:
        if len(buf) < size:
            buf.append(sample)
            continue
        i = rng.randrange(len(buf))
        buf[i], sample = sample, buf[i]
        yield sample
    rng.shuffle(buf)
    yield from buf


def to_model_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 frames in 0..255 -> float32 in [-1, 1] (x / 127.5 - 1)."""
    return video.float().div_(127.5).sub_(1.0)


class VideoLoader:
    """Batches of (video (B, T, C, H, W) float32 in [-1, 1] on `device`, cond) from a DataLoader."""

    def __init__(self, loader: DataLoader, device: str | torch.device | None = None):
        self.loader, self.device = loader, device

    @property
    def dataset(self) -> ShardDataset:
        return self.loader.dataset

    def set_epoch(self, epoch: int) -> None:
        self.loader.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict]]:
        for video, cond in self.loader:
            if self.device is not None:
                video = video.to(self.device, non_blocking=True)
                cond = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in cond.items()}
            yield to_model_range(video), cond


def make_loader(urls, batch_size: int, num_frames: int = 14, stride: int = 1,
                size: tuple[int, int] | None = None, num_workers: int = 2, shuffle: int = 1000,
                seed: int = 0, epoch: int = 0, resampled: bool = False, rank: int | None = None,
                world_size: int | None = None, drop_last: bool = False,
                device: str | torch.device | None = None,
                multiprocessing_context: str | None = "spawn", latents: bool = False) -> VideoLoader:
    """Batches (video (B, T, C, H, W) float32 in [-1, 1], cond) over shards; see the module docstring.

    cond: fps_id, motion_bucket_id, frame_start, frame_stride, skipped as LongTensors (B,) (on `device`);
    elevation_deg (B,) float64 (a rendered orbit's camera elevation, NaN for other clips);
    caption, clip_id, key as lists of str; with `latents`, cond["latents"] (B, T, 4, H/8, W/8)
    float16, the stored latents of exactly the frames in `video`. cond_aug is not stored: sample
    it in the training step. With a CUDA `device`, batches are pinned and copied without blocking. Workers are
    spawned once and kept (persistent): a forked worker can hang forever when the trainer has
    already run threaded native code (video writers, OpenCV) before the fork.
    """
    cfg = LoaderConfig(num_frames=num_frames, stride=stride, size=size, shuffle=shuffle, seed=seed,
                       resampled=resampled, latents=latents)
    dataset = ShardDataset(urls, cfg, rank=rank, world_size=world_size, epoch=epoch)
    workers_kw = {}
    if num_workers > 0:
        workers_kw = {"persistent_workers": True, "multiprocessing_context": multiprocessing_context,
                      "worker_init_fn": _leave_sigterm_to_the_trainer}
    pin = device is not None and torch.device(device).type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last,
                        pin_memory=pin, **workers_kw)
    return VideoLoader(loader, device)


def _leave_sigterm_to_the_trainer(worker_id: int) -> None:
    """A SIGTERM sent to the whole job must not kill a loader worker mid-batch: the trainer
    finishes its step and saves a checkpoint first (svdcli/train/stop.py), then ends the loader
    (a worker whose parent is gone exits by itself). A trainer starts its workers with the
    signals blocked (`svdcli.interrupts.held`), so none can kill one before this runs."""
    import signal

    from svdcli.interrupts import SIGNALS

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def pack_stats(folder: str | Path) -> dict:
    """The stats.json of a packed folder (sample counts, settings), for epoch sizes and logs."""
    return json.loads((Path(folder) / "stats.json").read_text())
