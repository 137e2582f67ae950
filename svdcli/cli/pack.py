"""`svd pack`: kept clips of a manifest -> WebDataset shards for training."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdcli.cli.common import console, fail, user_errors
from svdcli.cli.curate_cmds.options import ExecutorName, RayAddress


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write HEIGHTxWIDTH, e.g. 256x384") from None
    return h, w


_HELP = (
    "Pack every kept clip of a manifest into WebDataset shards (000000.tar ...): one sample per clip "
    "with its frames (mp4 and/or npy), a json (clip_id, source, times, fps, scores, caption, fps_id, "
    "motion_bucket_id) and a txt caption, plus index.parquet (clip_id -> shard, key) and stats.json."
    "\n\nfps_id is the sample frame rate minus one, as the SVD checkpoints were conditioned. A rerun "
    "resumes: finished shards are kept and each shard is written atomically. Clips that cannot be "
    "decoded or are too short are skipped and listed, with the reason, in stats.json."
    "\n\nExit codes: 0 done; 1 no sample packed, more undecodable clips than --max-error-rate, or shards that "
    "failed (rerun to retry them); 2 a bad manifest, setting or --out, or a full or read-only disk (the shards "
    "already written stay); 130 / 143 interrupted (Ctrl-C / SIGTERM): finished shards are kept and a rerun resumes."
    "\n\n--executor ray writes the shards as tasks on a Ray cluster (one per shard; --out on storage "
    "every node sees, see docs/scale.md); its shards and markers are the local ones, so either resumes the other."
)


def register(app: typer.Typer) -> None:
    """Add `svd pack` to the root app."""

    @app.command("pack", help=_HELP)
    @user_errors
    def pack(
        manifest: Path = typer.Option(..., "--manifest", "-m", help="Curated manifest (Parquet) with a `keep` column."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder for 000000.tar ..., index.parquet, stats.json."),
        frames: int = typer.Option(14, "--frames", help="Most frames stored per sample (the loader samples T of them "
                                   "at a stride)."),
        min_frames: Optional[int] = typer.Option(None, "--min-frames", help="Skip clips that yield fewer frames "
                                                 "(default: --frames). Skipped clips are listed in stats.json."),
        fps: Optional[float] = typer.Option(None, "--fps", help="Resample to F fps by timestamp: frames at "
                                            "start + k/F while before the clip end. Default: the source rate. A "
                                            "source slower than F keeps its own rate (frames are never repeated)."),
        size: str = typer.Option("256x384", "--size", help="Frame size HEIGHTxWIDTH (256x384 = height 256, width "
                                 "384, SVD's video pretraining size): resize to cover, then center crop."),
        shard_size: int = typer.Option(100, "--shard-size", help="Clips per shard."),
        fmt: str = typer.Option("mp4", "--format", help="Frames as mp4 (H.264), npy (uint8 array) or both."),
        crf: int = typer.Option(18, "--crf", help="H.264 quality of stored mp4 frames (lower = closer to source)."),
        motion_map: str = typer.Option("linear", "--motion-map", help="motion_score -> motion_bucket_id: 'linear' "
                                       "(round(scale*score), clipped to 0..255) or 'percentile' (rank among packed "
                                       "clips, 0..255)."),
        motion_scale: float = typer.Option(32.0, "--motion-scale", help="Scale of the linear motion map."),
        latents: Optional[str] = typer.Option(
            None, "--latents", help="Also store each sample's VAE latents (latents.npy, float16 (T, 4, H/8, W/8): "
            "the posterior MODE times 0.18215, as the UNet consumes them) so training with data.latents=true "
            "skips the VAE encoder. VAE_SOURCE: an official SVD .safetensors, our checkpoint, a `svd train` run "
            "dir, or tiny:SEED (the tiny model's seeded VAE). The json records the VAE's weights hash. Encodes on "
            "the GPU when there is one, else in the CPU workers. Default: off.", metavar="VAE_SOURCE"),
        workers: int = typer.Option(2, "--workers", "-w", help="Worker processes (each writes whole shards)."),
        all_ok: bool = typer.Option(False, "--all", help="Pack every ok clip, ignoring the `keep` column."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace shards in --out made from other input "
                                       "or settings (otherwise a rerun only resumes)."),
        rank: int = typer.Option(0, "--rank", help="This machine's share: shards k with k % world-size == rank."),
        world_size: int = typer.Option(1, "--world-size", help="Number of machines sharing the pack."),
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
        max_error_rate: float = typer.Option(1.0, "--max-error-rate", min=0.0, max=1.0,
                                             help="Fail (exit 1, after writing the index) when more than this share "
                                                  "of the selected clips could not be decoded. Whatever it is, a "
                                                  "pack of no sample exits 1."),
    ) -> None:
        from svdcli.shards.pack import PackConfig, run_pack

        if latents:
            _check_run_config(Path(latents))
        height, width = _parse_size(size)
        cfg = PackConfig(size=(height, width), frames=frames, min_frames=min_frames or frames, fps=fps,
                         shard_size=shard_size, format=fmt, crf=crf, motion_map=motion_map,
                         motion_scale=motion_scale, latents=latents)
        if not 0 <= rank < world_size:
            fail(f"--rank {rank} must be in 0..{world_size - 1}")
        from svdcli.curate.executors import executor_for

        summary = run_pack(manifest, out, cfg, workers=workers, all_ok=all_ok, overwrite=overwrite,
                           rank=rank, world_size=world_size, executor=executor_for(executor, ray_address))
        _report(summary, max_error_rate)


def _check_run_config(source: Path) -> None:
    """A `--latents RUN_DIR` names the VAE its training config trains with: that config must be
    one `svd train` accepts, checked whole before any work starts."""
    from svdcli import runs

    if source.is_dir() and runs.config_file(source).is_file():
        from svdcli.train.config import config_from_dict

        config_from_dict(runs.read_config(source), source=runs.config_file(source))


def _report(summary, max_error_rate: float) -> None:
    from rich.markup import escape

    con = console()
    rate = summary.shards_written / summary.seconds if summary.seconds else 0.0
    con.print(f"{summary.shards_written} shards written, {summary.shards_resumed} already done, "
              f"{summary.shards_total} in the pack ({summary.seconds:.1f} s, {rate:.2f} shards/s)")
    for f in summary.failed:
        con.print(f"[red]shard {f['shard']} failed:[/] {escape(str(f['error']))}", markup=True)
    if summary.stats is not None:
        s = summary.stats
        reasons = ", ".join(f"{k}: {v}" for k, v in s["skipped_by_reason"].items()) or "none"
        con.print(f"{s['samples']} samples of {s['selected']} selected clips; skipped {s['skipped']} ({reasons}). "
                  f"Wrote {summary.out}/index.parquet and stats.json")
        if not summary.failed:
            from svdcli.shards.pack import check_pack

            check_pack(s, max_error_rate)
    elif not summary.failed:
        con.print("other ranks' shards are not all written yet; the last rank to finish writes the index")
    if summary.failed:
        fail(f"{len(summary.failed)} shards failed; rerun the same command to retry them", code=1)
