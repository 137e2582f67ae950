"""The training data stream: `svd pack` shards through `svdcli.shards.loader`, made resumable.

Every rank checks its shard list up front: a missing or corrupt shard (one that `tarfile` cannot
read to the end) is skipped with a warning and counted, and all ranks drop the same shards, so
the per-rank split stays consistent. A bad sample (a json without `fps`, a video that does not
decode) is skipped by the loader with a warning and counted in `DataState.skipped_samples`,
which the run logs and sums over ranks in summary.json. The stream is a deterministic function of
(seed, epoch, rank, num_workers), so resuming = rebuilding the epoch's loader and skipping the
batches this rank already consumed (`DataState`).
"""
from __future__ import annotations

import tarfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from svdcli.errors import SvdError
from svdcli.interrupts import held
from svdcli.train.config import TrainConfig


@dataclass
class DataState:
    """Where this rank's stream is: epoch, batches already taken from it, and the bad samples
    the loader skipped before them (a json without fps, an undecodable video)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    skipped_samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ShardCheck:
    good: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"shard", "reason"}


def expected_shards(folder: Path) -> list[str]:
    """Shard names the pack's index lists (so a deleted shard is noticed), else those present."""
    index = folder / "index.parquet"
    if index.exists():
        names = index_shards(index)
        if names:
            return [str(folder / n) for n in names]
    return sorted(str(p) for p in folder.glob("[0-9]" * 6 + ".tar"))


def index_shards(index: Path) -> list[str]:
    """The shard names an `svd pack` index.parquet lists: plain file names inside its folder."""
    import pyarrow.parquet as pq

    if not index.is_file():
        raise SvdError(f"{index} is a folder, not the Parquet index `svd pack` writes")
    try:
        table = pq.read_table(index)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a non-Parquet file
        raise SvdError(f"{index} is not a readable Parquet file ({type(exc).__name__}: empty, truncated or "
                       "another format); rerun `svd pack` to rewrite it") from None
    if "shard" not in table.column_names:
        raise SvdError(f"{index} has no `shard` column (columns: {', '.join(table.column_names) or 'none'}); "
                       "is it an `svd pack` index?")
    names = sorted({str(n) for n in table.column("shard").to_pylist() if n is not None})
    outside = [n for n in names if not n or Path(n).name != n or n in (".", "..")]
    if outside:
        raise SvdError(f"{index} names shard {outside[0]!r}, which is not a file in its folder; "
                       "an `svd pack` index lists shards by file name only")
    return names


def check_shards(data: str | Path) -> ShardCheck:
    """Split the shards into readable ones and skipped ones (missing / corrupt), with reasons."""
    data = Path(data)
    if not data.exists():
        raise SvdError(f"training data not found: {data} (a folder written by `svd pack`)")
    urls = expected_shards(data) if data.is_dir() else [str(data)]
    out = ShardCheck()
    for url in urls:
        reason = _unreadable(Path(url))
        if reason:
            warnings.warn(f"skipping shard {url}: {reason}")
            out.skipped.append({"shard": url, "reason": reason})
        else:
            out.good.append(url)
    if not out.good:
        first = out.skipped[0] if out.skipped else None
        why = f"{len(out.skipped)} skipped, e.g. {first['shard']}: {first['reason']}" if first else "none found"
        raise SvdError(f"no readable shards in {data} ({why}); run `svd pack` first")
    return out


def _unreadable(path: Path) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()  # walks every header: a truncated shard fails here
        if not members:
            return "empty"
    except (tarfile.TarError, OSError, EOFError) as exc:
        # tarfile's ReadError lists every compression it tried, one per line: the last is plain tar
        detail = str(exc).strip().splitlines()[-1].strip(" -") if str(exc).strip() else ""
        return f"corrupt ({type(exc).__name__}: {detail.removeprefix('method tar: ')})"
    return None


def check_latents(urls: list[str], vae) -> dict:
    """The shards' latent spec, after checking that every shard's first sample has latents made by
    a VAE with the same weights hash as the training VAE (data.latents); else a clear error."""
    from svdcli.shards.latents import vae_hash

    want = vae_hash(vae)
    for url in urls:
        meta = _first_sample_meta(Path(url))
        spec = (meta or {}).get("latents")
        if not spec:
            raise SvdError(f"data.latents is true but {url} holds no latents: repack with "
                           "`svd pack --latents VAE_SOURCE` (the training VAE), or set data.latents=false")
        if spec.get("vae_hash") != want:
            raise SvdError(f"{url} holds latents of another VAE ({spec.get('source')}, weights hash "
                           f"{spec.get('vae_hash')}) than training uses (hash {want}): repack with the training "
                           "VAE (`--latents tiny:SEED` for model tiny, the weights file for svd), or set "
                           "data.latents=false")
    return spec


def _first_sample_meta(path: Path) -> dict | None:
    import json

    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                try:
                    return json.loads(tar.extractfile(member).read())
                except ValueError:  # not UTF-8 or not JSON
                    raise SvdError(f"{path}: {member.name} is not readable JSON; repack the shard") from None
    return None


class TrainStream:
    """Endless (video, cond) batches for one rank, resumable at any step."""

    def __init__(self, urls: list[str], cfg: TrainConfig, rank: int, world_size: int,
                 state: DataState | None = None):
        self.urls, self.cfg, self.rank, self.world_size = urls, cfg, rank, world_size
        self.state = state or DataState()
        self._it = None

    def _open(self):
        from svdcli.shards.loader import make_loader

        d = self.cfg.data
        frames = self.cfg.frames
        loader = make_loader(self.urls, batch_size=d.batch_size, num_frames=frames,
                             size=(d.height, d.width), num_workers=d.num_workers,
                             shuffle=d.shuffle_buffer, seed=self.cfg.seed, epoch=self.state.epoch,
                             rank=self.rank, world_size=self.world_size, drop_last=True, latents=d.latents)
        with held():  # loader workers start with SIGINT / SIGTERM blocked until their init
            it = iter(loader)
        for _ in range(self.state.batch_in_epoch):  # resume: replay what this rank consumed (and counted)
            next(it)
        return it

    def next(self):
        """The next batch; a finished epoch starts the next one (reshuffled)."""
        for _ in range(2):
            if self._it is None:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*IterableDataset.*")
                    self._it = self._open()
            try:
                batch = next(self._it)
                self.state.batch_in_epoch += 1
                self.state.skipped_samples += int(batch[1]["skipped"].sum())
                return batch
            except StopIteration:
                if self.state.batch_in_epoch == 0:
                    break
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                self._it = None
        undecodable = every_sample_fails(self.urls, self.cfg)
        if undecodable:
            raise SvdError(undecodable)
        raise SvdError(f"rank {self.rank} got no full batch of {self.cfg.data.batch_size} from "
                       f"{len(self.urls)} shards: use fewer processes / data.num_workers, a smaller "
                       "data.batch_size, or pack more, smaller shards (--shard-size)")


def every_sample_fails(urls: list[str], cfg: TrainConfig, most: int = 64) -> str | None:
    """When a stream gave no batch: the message saying so if none of the first `most` samples
    of the shards can be used (garbage frames, bad json), naming the first few and why; None
    when some can (the batch size or the split is the problem then)."""
    import webdataset as wds

    from svdcli.shards.loader import LoaderConfig, ShardDataset

    d = cfg.data
    dataset = ShardDataset(urls, LoaderConfig(num_frames=cfg.frames, size=(d.height, d.width), shuffle=0,
                                              latents=d.latents), rank=0, world_size=1)
    failures: list[str] = []
    samples = wds.tarfile_to_samples(handler=wds.ignore_and_continue)({"url": u} for u in urls)
    for sample in samples:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            usable = dataset.decode(sample) is not None
        if usable:
            return None
        why = str(caught[-1].message).removeprefix("skipping sample ") if caught else f"{sample.get('__key__')}: ?"
        failures.append(why)
        if len(failures) >= most:
            break
    if not failures:
        return f"the {len(urls)} shards hold no samples; repack with `svd pack`"
    which = (f"none of the first {most} samples of the {len(urls)} shards" if len(failures) >= most
             else f"none of the {len(failures)} samples of the {len(urls)} shards")
    return (f"{which} can be used: every one failed to decode, e.g. {'; '.join(failures[:3])}; repack the "
            "shards with `svd pack` from readable videos")
