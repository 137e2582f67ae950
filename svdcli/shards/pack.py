"""`svd pack`: kept manifest clips -> WebDataset shards, one sample per clip.

Layout of the output folder:
    000000.tar, 000001.tar, ...   samples `<key>.mp4` and/or `<key>.npy`, `<key>.json`, `<key>.txt`
                                  (+ `<key>.latents.npy` with --latents, see latents.py)
    index.parquet                 clip_id -> shard, key (+ frames, fps, conditioning)
    stats.json                    settings, counts, every skipped clip with its reason
    pack.json                     the settings and clip assignment the shards were made with
    .pack/000000.json             per-shard completion marker (its index rows and skips)

Clips are ordered by sha1(video path), then start time, and shard k holds clips [k*N, (k+1)*N)
of that order: the assignment is stable across reruns and does not depend on the manifest's row
order, and neighbouring clips of one video are decoded in one pass (the loader's shard shuffle
and shuffle buffer mix videos again). Each shard is written to `<name>.tar.tmp` and renamed,
then its marker is written: a shard without a readable marker is rewritten by the next run, a
shard with one is skipped. An unreadable pack.json stops the run (the shards beside it cannot be
checked) unless --overwrite replaces them. A clip that cannot be decoded (or is shorter than
--min-frames) is left out of its shard and listed in stats.json with the reason. The frame rule
is in samples.py.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tarfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from svdcli.errors import SvdError
from svdcli.interrupts import held
from svdcli.manifest.schema import CLIP_COLUMNS, CLIP_ON_GRID
from svdcli.shards.samples import CAPTION_KINDS  # the captions every sample json carries
from svdcli.shards.micro_conditioning import MotionBuckets
from svdcli.shards.pack_config import PackConfig
from svdcli.shards.samples import (ORBIT_CAMERA, ClipSkipped, build_sample, group_size, sample_key, score_columns,
                                  video_clip_frames)

MARKERS = ".pack"
# what a pack reads of each row (+ every stage's scores); the rows feed the pack's fingerprint, so
# a column added here would make existing packs look stale
PACKED_COLUMNS = (*(c for c in CLIP_COLUMNS if c not in ("num_frames", "video_duration")), "caption", *CAPTION_KINDS)


@dataclass
class ShardJob:
    name: str  # "000000"
    clips: list[dict]
    out: str
    config: PackConfig
    motion: MotionBuckets


@dataclass
class ShardResult:
    name: str
    rows: list[dict] = field(default_factory=list)  # index rows of the samples written
    skipped: list[dict] = field(default_factory=list)  # {"clip_id", "kind", "reason"}
    bytes: int = 0


def order_clips(clips: list[dict]) -> list[dict]:
    """Packing order: videos by sha1(video path), clips of a video by start time.

    Independent of the manifest's row order; neighbouring clips of one video land in one shard
    so the writer decodes them in one pass (the loader's shuffle buffer mixes videos again).
    """
    def key(c: dict) -> tuple:
        return hashlib.sha1(c["video_path"].encode()).hexdigest(), c["start_time"], c["clip_id"]

    return sorted(clips, key=key)


# --- one shard -----------------------------------------------------------------------------
def write_shard(job: ShardJob) -> ShardResult:
    """Write one shard atomically (tmp + rename), then its completion marker."""
    out = Path(job.out)
    path, tmp = out / f"{job.name}.tar", out / f"{job.name}.tar.tmp"
    from svdcli.outputs import writing

    result = ShardResult(job.name)
    encoder = None
    if job.config.latents:
        from svdcli.shards.latents import latent_encoder

        encoder = latent_encoder(job.config.latents)
    try:
        with writing(path), tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for video_clips in _by_video(job.clips, group_size(job.config)):
                decoded = video_clip_frames(video_clips, job.config)
                for clip in video_clips:
                    got = decoded[clip["clip_id"]]
                    if isinstance(got, ClipSkipped):
                        result.skipped.append({"clip_id": clip["clip_id"], "kind": got.kind, "reason": str(got)})
                        continue
                    latent = None
                    if encoder is not None:
                        from svdcli.shards.latents import encode_latents

                        latent = (encode_latents(encoder[0], got[0]), encoder[1].to_dict())
                    sample, row = build_sample(clip, *got, job.config, job.motion, latent=latent)
                    for ext in ("mp4", "npy", "latents.npy", "json", "txt"):
                        if ext in sample:
                            _add_member(tar, f"{sample['__key__']}.{ext}", sample[ext])
                    result.rows.append({**row, "shard": path.name})
        with writing(path):
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    result.bytes = path.stat().st_size
    _write_json_atomic(out / MARKERS / f"{job.name}.json", asdict(result))
    return result


def _by_video(clips: list[dict], most: int) -> list[list[dict]]:
    """Consecutive runs of at most `most` clips from the same video (bounds decoded memory)."""
    runs: list[list[dict]] = []
    for clip in clips:
        if runs and runs[-1][0]["video_path"] == clip["video_path"] and len(runs[-1]) < most:
            runs[-1].append(clip)
        else:
            runs.append([clip])
    return runs


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: no wall-clock time in the shards
    tar.addfile(info, io.BytesIO(data))


def _write_json_atomic(path: Path, obj) -> None:
    from svdcli.outputs import writing

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(obj, indent=1, default=str))
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)



# --- the whole pack ------------------------------------------------------------------------
@dataclass
class PackSummary:
    out: Path
    shards_total: int
    shards_written: int  # by this run
    shards_resumed: int  # already complete before this run
    failed: list[dict]  # {"shard", "error"}: shards to retry with a rerun
    seconds: float
    stats: dict | None  # stats.json content once every shard of the pack exists

    @property
    def complete(self) -> bool:
        return self.stats is not None


def select_clips(table, all_ok: bool = False, source: str | Path = "manifest") -> tuple[list[dict], dict]:
    """Rows to pack (status ok and keep true, or every ok row with `all_ok`) and the counts."""
    names = set(table.column_names)
    missing = [c for c in CLIP_ON_GRID if c not in names]
    if missing:
        raise SvdError(f"{source} lacks columns {missing}; is it a `svd curate` manifest?")
    if not all_ok and "keep" not in names:
        raise SvdError(f"{source} has no `keep` column: run `svd curate filter` first, or pass --all "
                       "to pack every ok clip")
    wanted = PACKED_COLUMNS + score_columns() + (ORBIT_CAMERA, "status", "keep")
    rows = table.select([c for c in wanted if c in names]).to_pylist()
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    kept = ok if all_ok else [r for r in ok if r.get("keep")]
    keys: dict[str, str] = {}
    for r in kept:
        other = keys.setdefault(sample_key(r["clip_id"]), r["clip_id"])
        if other != r["clip_id"]:
            raise SvdError(f"clip ids {other!r} and {r['clip_id']!r} map to the same sample key")
    if len(keys) != len(kept):
        raise SvdError("the manifest lists some clip_id more than once; rerun the curation stages")
    counts = {"manifest_rows": len(rows), "ok_rows": len(ok), "selected": len(kept),
              "selection": "every ok clip (--all)" if all_ok else "keep == true"}
    return kept, counts


def plan_shards(clips: list[dict], shard_size: int) -> list[tuple[str, list[dict]]]:
    ordered = order_clips(clips)
    return [(f"{k:06d}", ordered[i:i + shard_size]) for k, i in enumerate(range(0, len(ordered), shard_size))]


def pack_fingerprint(cfg: PackConfig, plan: list[tuple[str, list[dict]]], latents: dict | None = None) -> str:
    """Covers the settings, every clip's row and the latents' VAE (its weights hash, not only
    its path), so changed input never reuses old shards."""
    blob = json.dumps({"config": asdict(cfg), "plan": plan, **({"latents": latents} if latents else {})},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def prepare_out(out: Path, fingerprint: str, info: dict, overwrite: bool) -> None:
    """Create `out`, or check that its shards were made from the same input and settings."""
    from svdcli.outputs import writing

    if out.exists() and not out.is_dir():
        raise SvdError(f"--out {out} is a file; pass a folder for the shards")
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    pack_json = out / "pack.json"
    if pack_json.exists():
        old = _read_pack_json(pack_json, overwrite)
        if old != fingerprint and not overwrite:
            raise SvdError(f"{out} holds shards packed from another manifest or other settings; "
                           "use a new --out folder, or --overwrite to replace them")
        if old != fingerprint:
            remove_pack(out)
    _write_json_atomic(pack_json, {**info, "fingerprint": fingerprint})


def _read_pack_json(path: Path, overwrite: bool) -> str | None:
    """The fingerprint pack.json records; an unreadable one is an error (None with --overwrite)."""
    try:
        return str(json.loads(path.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # missing key, not JSON, not a dict
        if overwrite:
            return None
        raise SvdError(f"{path} is not a readable pack record ({type(exc).__name__}), so the shards beside it "
                       "cannot be checked against this manifest and settings; pass --overwrite to replace "
                       "them, or use a new --out folder") from None


def remove_pack(out: Path) -> None:
    """Delete the files a pack writes (and nothing else) from `out`."""
    for p in list(out.glob("[0-9]" * 6 + ".tar*")) + [out / "index.parquet", out / "stats.json"]:
        if p.exists():
            p.unlink()
    for p in (out / MARKERS).glob("*.json") if (out / MARKERS).is_dir() else []:
        p.unlink()


def shard_done(out: Path, name: str) -> bool:
    """A shard with its completion marker; an unreadable marker (a crash mid-write) means redo it."""
    if not (out / f"{name}.tar").is_file():
        return False
    try:
        marker = json.loads((out / MARKERS / f"{name}.json").read_text())
    except (OSError, ValueError):  # missing, not text, not JSON
        return False
    return isinstance(marker, dict) and all(k in marker for k in ("name", "rows", "skipped", "bytes"))


def run_pack(manifest: str | Path, out: str | Path, cfg: PackConfig, *, workers: int = 2,
             all_ok: bool = False, overwrite: bool = False, rank: int = 0, world_size: int = 1,
             progress: bool = True, executor=None) -> PackSummary:
    """Pack the manifest's kept clips into `out`; resumes, and finalizes once all shards exist.

    `executor` (a svdcli.curate.executors RayExecutor) writes the shards as tasks on a Ray
    cluster, one per shard; `out` must then be storage every node sees. Shards and completion
    markers are the same either way, so a Ray pack resumes a local one and back."""
    from svdcli.manifest.io import read_manifest
    from svdcli.outputs import check_writable

    t0 = time.perf_counter()
    cfg.validate()
    out = Path(out)
    if not (out.exists() and not out.is_dir()):  # a file: prepare_out says so
        check_writable(out, "--out")
    clips, selection = select_clips(read_manifest(manifest), all_ok, source=manifest)
    if not clips:
        raise SvdError(f"no clips to pack in {manifest} ({selection['ok_rows']} ok rows, none kept); "
                       "check the filter step or pass --all")
    motion = MotionBuckets(cfg.motion_map, cfg.motion_scale, [c.get("motion_score") for c in clips])
    plan = plan_shards(clips, cfg.shard_size)
    latents = None
    if cfg.latents:  # loaded here first, so a bad source fails before any worker starts
        from svdcli.shards.latents import latent_encoder

        latents = latent_encoder(cfg.latents)[1].to_dict()
    fingerprint = pack_fingerprint(cfg, plan, latents)
    prepare_out(out, fingerprint, {"manifest": str(Path(manifest).resolve()), "config": asdict(cfg),
                                   "selection": selection, "shards": len(plan), "latents": latents}, overwrite)
    mine = [(name, group) for k, (name, group) in enumerate(plan) if k % world_size == rank]
    todo = [ShardJob(name, group, str(out), cfg, motion) for name, group in mine if not shard_done(out, name)]
    failed = _run_jobs(todo, workers, progress, total_clips=sum(len(g) for _, g in mine),
                       done_clips=sum(len(g) for n, g in mine if shard_done(out, n)), executor=executor)
    seconds = time.perf_counter() - t0
    stats = None
    if all(shard_done(out, name) for name, _ in plan):
        stats = finalize(out, plan, cfg, motion, selection, latents)
    return PackSummary(out, len(plan), len(todo) - len(failed), len(mine) - len(todo), failed, seconds, stats)


def _run_jobs(jobs: list[ShardJob], workers: int, progress: bool, total_clips: int, done_clips: int,
              executor=None) -> list[dict]:
    """Write the shards, in worker processes when workers > 1 (or as the executor's tasks);
    returns the shards that failed."""
    failed: list[dict] = []
    with _PackProgress(total_clips, done_clips, progress) as bar:
        if executor is not None and jobs:
            from svdcli.curate.executors import TaskFailure

            for job, result in executor.map_calls(write_shard, jobs):
                if isinstance(result, TaskFailure):
                    _failed(job, result.message, bar, failed)
                else:
                    _collect(job, lambda result=result: result, bar, failed)
            return failed
        if workers <= 1:
            for job in jobs:
                _collect(job, lambda job=job: write_shard(job), bar, failed)
            return failed
        # spawn, not fork: a parent that already ran threaded native code (OpenCV's pool, codecs;
        # a test or a notebook that made videos) can leave a lock held in a forked child, which
        # then hangs forever with no error
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            with held():  # starting the workers is not to be cut in half by a signal
                futures = {pool.submit(_write_shard_in_worker, job): job for job in jobs}
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        _collect(futures[f], f.result, bar, failed)
            except BaseException:  # Ctrl-C, SIGTERM, a full disk: shards not started yet stay undone
                for f in pending:
                    f.cancel()
                raise
    return failed


def _collect(job: ShardJob, get_result, bar, failed: list[dict]) -> None:
    from svdcli.outputs import OutputError

    try:
        result = get_result()
    except OutputError:  # a full disk or a read-only folder: every other shard would fail the same way
        raise
    except Exception as exc:  # noqa: BLE001 - a failed shard is reported and retried by a rerun
        _failed(job, f"{type(exc).__name__}: {exc}", bar, failed)
        return
    bar.advance(len(job.clips), skipped=len(result.skipped), failed=0)


def _init_worker() -> None:
    """A signal to the process group stops a pack worker's shard as it stops the parent."""
    from svdcli.interrupts import in_worker

    in_worker()


def _write_shard_in_worker(job: ShardJob) -> ShardResult:
    from svdcli.interrupts import task

    with task():
        return write_shard(job)


def _failed(job: ShardJob, error: str, bar, failed: list[dict]) -> None:
    failed.append({"shard": job.name, "error": error})
    bar.advance(len(job.clips), skipped=0, failed=1)


def finalize(out: Path, plan: list[tuple[str, list[dict]]], cfg: PackConfig, motion: MotionBuckets,
             selection: dict, latents: dict | None = None) -> dict:
    """Write index.parquet (clip_id -> shard, key) and stats.json from the shard markers."""
    import pyarrow as pa

    from svdcli.manifest.io import write_parquet_atomic

    markers = [json.loads((out / MARKERS / f"{name}.json").read_text()) for name, _ in plan]
    rows = [r for m in markers for r in m["rows"]]
    skipped = [s for m in markers for s in m["skipped"]]
    index = pa.Table.from_pylist(rows, schema=_index_schema())
    write_parquet_atomic(index, out / "index.parquet")
    by_kind: dict[str, int] = {}
    for s in skipped:
        by_kind[s["kind"]] = by_kind.get(s["kind"], 0) + 1
    no_score = sum(1 for _, g in plan for c in g if c.get("motion_score") is None)
    stats = {
        "samples": len(rows), "shards": len(plan), "skipped": len(skipped), "skipped_by_reason": by_kind,
        "skipped_clips": skipped, **selection, "config": asdict(cfg), "motion_buckets": motion.describe(),
        "latents": latents,
        "clips_without_motion_score": no_score,
        "frames_per_sample": _histogram(r["num_frames"] for r in rows),
        "bytes": sum(m["bytes"] for m in markers),
        "samples_per_shard": {m["name"]: len(m["rows"]) for m in markers},
    }
    _write_json_atomic(out / "stats.json", stats)
    return stats


def check_pack(stats: dict, max_error_rate: float = 1.0) -> None:
    """Raise RunFailed (exit 1; the index and stats.json are written) for a pack of no sample, or
    one where more than `max_error_rate` of the selected clips could not be decoded."""
    from svdcli.errors import RunFailed

    skipped = stats["skipped_clips"]
    e_g = f" (e.g. clip {skipped[0]['clip_id']}: {skipped[0]['reason']})" if skipped else ""
    if stats["samples"] == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["skipped_by_reason"].items())
        raise RunFailed(f"no sample packed: all {stats['selected']} selected clips were skipped ({reasons}){e_g}")
    undecodable = stats["skipped_by_reason"].get("decode_error", 0)
    if stats["selected"] and undecodable / stats["selected"] > max_error_rate:
        first = next(s for s in skipped if s["kind"] == "decode_error")
        raise RunFailed(f"{undecodable} of {stats['selected']} clips could not be decoded "
                        f"({undecodable / stats['selected']:.1%}), above --max-error-rate {max_error_rate:g} "
                        f"(e.g. clip {first['clip_id']}: {first['reason']})")


def _histogram(values) -> dict[str, int]:
    hist: dict[str, int] = {}
    for v in values:
        hist[str(v)] = hist.get(str(v), 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: int(kv[0])))


def _index_schema():
    import pyarrow as pa

    return pa.schema([("clip_id", pa.string()), ("shard", pa.string()), ("key", pa.string()),
                      ("num_frames", pa.int32()), ("fps", pa.float64()), ("fps_id", pa.int32()),
                      ("motion_bucket_id", pa.int32())])


class _PackProgress:
    """A rich progress bar over clips, advanced a shard at a time."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.done, self.enabled = total, done, enabled
        self.skipped = self.failed = 0
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]pack"), BarColumn(), MofNCompleteColumn(), TextColumn("clips"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self._bar.__enter__()
            self._id = self._bar.add_task("pack", total=self.total, completed=self.done,
                                          info="(resumed)" if self.done else "")
        return self

    def advance(self, clips: int, skipped: int, failed: int) -> None:
        self.skipped += skipped
        self.failed += failed
        if self._bar is not None:
            self._bar.update(self._id, advance=clips,
                             info=f"· {self.skipped} skipped · {self.failed} shards failed")

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
