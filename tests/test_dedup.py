"""`svd curate dedup`: planted near duplicates in a manifest's CLIP embeddings side file."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("faiss")

from svdcli.cli.main import app  # noqa: E402
from svdcli.curate.stages.clip import embeddings_path, embeddings_table  # noqa: E402
from svdcli.curate.stages.filter import run_filter  # noqa: E402
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest  # noqa: E402

COLUMNS = ["clip_id", "status", "num_frames", "motion_score", "aesthetic_score"]


def corpus(tmp_path, n=40, seed=0):
    """n clips; clip 2k+1 is a near copy (cosine ~0.99) of clip 2k for k < 5; c39 has no embedding."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, 32)).astype(np.float32)  # (clips, frames, D)
    for k in range(5):
        base[2 * k + 1] = base[2 * k] + 0.05 * rng.standard_normal((3, 32))
    base /= np.linalg.norm(base, axis=-1, keepdims=True)
    rows = [{"clip_id": f"c{i:02d}", "status": "ok", "num_frames": 50 + (i % 2) * 10, "motion_score": 1.0,
             "aesthetic_score": float(n - i)} for i in range(n)]
    manifest = tmp_path / "clips.parquet"
    write_manifest(table_from_rows(rows, COLUMNS), manifest)
    ids = [r["clip_id"] for r in rows][:-1]
    import pyarrow.parquet as pq

    pq.write_table(embeddings_table(ids, [[0.0, 1.0, 2.0]] * len(ids), base[:-1]), embeddings_path(manifest))
    return manifest


def test_cli_marks_the_copies_and_filter_drops_them(tmp_path):
    manifest = corpus(tmp_path)
    result = CliRunner().invoke(app, ["curate", "dedup", "-m", str(manifest), "--threshold", "0.95"])
    assert result.exit_code == 0, result.output
    assert "5 near duplicates of 5 kept clips" in result.output
    table = read_manifest(manifest)
    dup = dict(zip(table.column("clip_id").to_pylist(), table.column("duplicate_of").to_pylist()))
    # --keep longest: the odd clips have 60 frames, so they are kept and the originals dropped
    assert {k: v for k, v in dup.items() if v} == {f"c{2 * k:02d}": f"c{2 * k + 1:02d}" for k in range(5)}
    sims = [s for s in table.column("duplicate_similarity").to_pylist() if s is not None]
    assert len(sims) == 5 and min(sims) >= 0.95
    out, counts, _ = run_filter(manifest, ["motion_score >= 0.25"], tmp_path / "f.parquet")
    assert counts["kept"] == 35
    assert counts["near_duplicate_of:c01"] == 1
    assert dup["c39"] is None  # no embedding: never grouped


def test_keep_by_score_and_standalone_after_filter(tmp_path):
    manifest = corpus(tmp_path)
    run_filter(manifest, ["motion_score >= 0.25"])  # keep exists: dedup marks the rows itself
    result = CliRunner().invoke(app, ["curate", "dedup", "-m", str(manifest), "--keep", "aesthetic_score"])
    assert result.exit_code == 0, result.output
    table = read_manifest(manifest)
    reason = dict(zip(table.column("clip_id").to_pylist(), table.column("drop_reason").to_pylist()))
    # aesthetic falls with the index: the even (earlier) clip of each pair is kept
    assert reason["c01"] == "near_duplicate_of:c00" and reason["c00"] is None
    assert sum(not k for k in table.column("keep").to_pylist()) == 5


def test_clear_errors(tmp_path):
    manifest = corpus(tmp_path)
    embeddings_path(manifest).unlink()
    result = CliRunner().invoke(app, ["curate", "dedup", "-m", str(manifest)])
    assert result.exit_code != 0 and "svd curate clip" in result.output
    manifest = corpus(tmp_path)
    result = CliRunner().invoke(app, ["curate", "dedup", "-m", str(manifest), "--keep", "nope"])
    assert result.exit_code != 0 and "no column 'nope'" in result.output
