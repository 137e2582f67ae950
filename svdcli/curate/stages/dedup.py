"""Dedup stage: near-duplicate clips from the CLIP embeddings side file, one kept per group.

Reads `<manifest stem>.clip_embeddings.parquet` (written by the clip stage), averages each
clip's frame embeddings into one unit vector and finds near-duplicate groups with
`svdcli.curate.scorers.near_duplicates` (cosine >= `threshold`; exact faiss search, an IVF
index past `exact_limit` clips). Every clip that nearly duplicates a kept one gets
`duplicate_of` (the kept clip's id) and `duplicate_similarity`; the filter then drops it with
`drop_reason = near_duplicate_of:<clip_id>`. Run standalone on a filtered manifest, the stage
also marks those rows `keep = false` with that reason (rows already dropped keep theirs).

Which clip of a group is kept: `keep: longest` (most frames, the default), or the name of a
score column (the highest value kept, e.g. `aesthetic_score`). Clips without an embedding
(errors, short rows) are never grouped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from svdcli.curate.stage import SettingError, StageSpec
from svdcli.errors import SvdError
from svdcli.manifest.schema import Column

COLUMNS = (
    Column("duplicate_of", pa.string(), "dedup",
           "clip_id of the kept clip whose CLIP embedding this clip's is within the dedup threshold of "
           "(cosine similarity, mean of its frame embeddings); null when it duplicates none"),
    Column("duplicate_similarity", pa.float32(), "dedup", "cosine similarity to `duplicate_of` (null when none)"),
)
REASON = "near_duplicate_of:"


@dataclass
class DedupConfig:
    threshold: float = 0.95   # cosine similarity at or above which two clips are near duplicates
    keep: str = "longest"     # 'longest' or a score column: which clip of a group is kept
    index: str = "auto"       # 'exact' | 'ivf' | 'auto' (exact up to exact_limit clips)
    exact_limit: int = 50_000
    nprobe: int = 16          # IVF cells visited per query


def clip_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """(clip ids, (N, D) unit vectors): each clip's frame embeddings averaged and renormalised."""
    from svdcli.curate.scorers.near_duplicates import normalise
    from svdcli.manifest.io import read_parquet

    if not Path(path).is_file():
        raise SvdError(f"no CLIP embeddings at {path}: run `svd curate clip` (it writes them beside its "
                       "manifest) or pass --embeddings")
    table = read_parquet(path, columns=["clip_id", "embedding"])
    ids = np.asarray(table.column("clip_id").to_pylist())
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)  # (rows, D)
    uniq, inverse = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(uniq), emb.shape[1]), np.float32)
    np.add.at(sums, inverse, emb)
    return uniq.tolist(), normalise(sums)


def priorities(table: pa.Table, keep: str) -> np.ndarray:
    column = "num_frames" if keep == "longest" else keep
    if column not in table.column_names:
        raise SvdError(f"dedup keep={keep!r}: the manifest has no column {column!r}")
    return np.array([np.nan if v is None else float(v) for v in table.column(column).to_pylist()])


def find_in_manifest(table: pa.Table, embeddings: Path, cfg: DedupConfig, progress=None, executor=None):
    """(duplicate_of, similarity) per manifest row."""
    from svdcli.curate.scorers.near_duplicates import DuplicateConfig, find_duplicates

    ids, emb = clip_embeddings(embeddings)
    row_of = {cid: i for i, cid in enumerate(table.column("clip_id").to_pylist())}
    have = [k for k, cid in enumerate(ids) if cid in row_of]
    rows = [row_of[ids[k]] for k in have]
    pri = priorities(table, cfg.keep)[rows] if rows else np.zeros(0)
    dcfg = DuplicateConfig(cfg.threshold, cfg.index, cfg.exact_limit, cfg.nprobe)  # keep: the priorities
    dup, sim = find_duplicates([ids[k] for k in have], emb[have], pri, dcfg, progress, executor)
    duplicate_of: list = [None] * table.num_rows
    similarity: list = [None] * table.num_rows
    for r, d, s in zip(rows, dup, sim):
        if d is not None:
            duplicate_of[r], similarity[r] = d, float(s)
    return duplicate_of, similarity


def run_dedup(manifest: Path, out: Path | None = None, cfg: DedupConfig = DedupConfig(),
              embeddings: Path | None = None, progress=None, executor=None) -> tuple[Path, int, int]:
    """Write `duplicate_of` / `duplicate_similarity` (and, where `keep` exists, drop the duplicates).
    `executor` (a RayExecutor) runs the neighbour search's query blocks on its cluster."""
    from svdcli.curate.stages.clip import embeddings_path
    from svdcli.manifest.io import manifest_history, put_column, read_manifest, write_manifest

    check(asdict(cfg))
    table = read_manifest(manifest)
    dup, sim = find_in_manifest(table, Path(embeddings or embeddings_path(manifest)), cfg, progress, executor)
    out_table = put_column(table, "duplicate_of", pa.array(dup, pa.string()))
    out_table = put_column(out_table, "duplicate_similarity", pa.array(sim, pa.float32()))
    if "keep" in out_table.column_names:
        keep = out_table.column("keep").to_pylist()
        reason = out_table.column("drop_reason").to_pylist()
        for i, d in enumerate(dup):
            if d is not None and keep[i]:
                keep[i], reason[i] = False, REASON + d
        out_table = put_column(out_table, "keep", pa.array(keep, pa.bool_()))
        out_table = put_column(out_table, "drop_reason", pa.array(reason, pa.string()))
    out = Path(out or manifest)
    record = {"stage": "dedup", "settings": asdict(cfg), "input": str(manifest)}
    write_manifest(out_table, out, record=record, history=manifest_history(table))
    kept_of = {d for d in dup if d is not None}
    return out, sum(d is not None for d in dup), len(kept_of)


def check(settings: dict) -> None:
    if not 0.0 < float(settings.get("threshold", 0.95)) <= 1.0:
        raise SettingError(f"dedup.threshold must be in (0, 1] (cosine similarity), not {settings['threshold']!r}")
    if settings.get("index", "auto") not in ("auto", "exact", "ivf"):
        raise SettingError(f"dedup.index must be auto, exact or ivf, not {settings['index']!r}")


def recipe_step(src: Path, out: Path, settings: dict, opts) -> None:
    """The dedup step of a recipe: one pass over the merged manifest on the driver (its
    neighbour search on the cluster when the run has a Ray executor)."""
    from svdcli.curate.stages.clip import embeddings_path

    run_dedup(src, out, DedupConfig(**settings), embeddings=embeddings_path(src),
              executor=opts.executor)


SPEC = StageSpec(
    name="dedup",
    columns=COLUMNS,
    config=DedupConfig,
    run=recipe_step,
    bounds=("threshold > 0", "threshold <= 1", "exact_limit >= 1", "nprobe >= 1"),
    check=check,
    after=(("clip", "it reads the CLIP embeddings the clip stage writes"),),
    histograms=(("duplicate_similarity", "cosine similarity to the kept clip"),),
)
