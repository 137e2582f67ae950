"""`svd curate dedup`: near-duplicate clips from the CLIP embeddings, one kept per group."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import console, user_errors
from svdcli.cli.curate_cmds.options import ExecutorName, RayAddress

HELP = """Find near-duplicate clips by the cosine similarity of their CLIP embeddings (the side file `svd curate clip` writes beside its manifest: each clip's frame embeddings averaged) and keep one per group.

Every clip at or above --threshold of a kept clip gets `duplicate_of` (the kept clip's id) and `duplicate_similarity`; `svd curate filter` then drops it with drop_reason 'near_duplicate_of:<clip_id>' (on a manifest that already has `keep`, this command marks it too). Which clip is kept: --keep longest (most frames) or --keep COLUMN (the highest score, e.g. aesthetic_score). Search: faiss inner product, exact up to --exact-limit clips, an IVF index above (--index to force). With --executor ray the index is built here once and the query blocks are searched as tasks on the cluster (the same groups)."""


def register(app: typer.Typer) -> None:
    @app.command("dedup", help=HELP)
    @user_errors
    def dedup(
        manifest: Path = typer.Option(..., "--manifest", "-m", help="Input manifest (after `svd curate clip`)."),
        out: Path = typer.Option(None, "--out", "-o", help="Output manifest (default: overwrite --manifest)."),
        threshold: float = typer.Option(0.95, min=0.0, max=1.0, help="Cosine similarity at or above which two clips are near duplicates."),
        keep: str = typer.Option("longest", help="Which clip of a group stays: 'longest' or a score column."),
        embeddings: Path = typer.Option(None, help="CLIP embeddings side file (default: beside --manifest)."),
        index: str = typer.Option("auto", help="auto | exact | ivf."),
        exact_limit: int = typer.Option(50_000, min=1, help="Exact search up to this many clips (auto)."),
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
    ) -> None:
        from rich.progress import Progress

        from svdcli.curate.executors import executor_for
        from svdcli.curate.stages.dedup import DedupConfig, run_dedup

        cfg = DedupConfig(threshold=threshold, keep=keep, index=index, exact_limit=exact_limit)
        with Progress(console=console(), transient=True) as bar:
            job = bar.add_task("dedup: searching neighbours", total=None)
            written, dropped, groups = run_dedup(manifest, out, cfg, embeddings,
                                                 progress=lambda n: bar.advance(job, n),
                                                 executor=executor_for(executor, ray_address))
        console().print(f"dedup: {dropped} near duplicates of {groups} kept clips "
                        f"(cosine >= {threshold:g}) -> {written}")
