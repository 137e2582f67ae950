"""Near-duplicate groups from unit-norm clip embeddings: cosine-similarity neighbours, one kept per group.

Definition (what `duplicate_of` means):

- Two clips are near duplicates when the cosine similarity of their embeddings is at least
  `threshold` (0.95 by default; with unit vectors cosine = inner product).
- Clips are visited in the keep order: the highest priority the caller passes first (the
  stage: most frames, or the best score), ties by clip_id, so the result does not depend on
  row order. A clip not yet claimed becomes
  the kept clip of its group and claims every unclaimed neighbour at or above the threshold;
  each claimed clip records the kept one (`duplicate_of`) and their similarity.
  So every dropped clip is a real near duplicate (>= threshold) of the clip named in its row,
  unlike connected components, where a chain A~B~C can drop C for A however far apart they are.

Search (faiss, inner product): an exact flat index up to `exact_limit` clips, an inverted-file
index (IVF, `nlist` ~ 4 sqrt(N) cells, `nprobe` visited per query) above it. Both answer a
range query (every neighbour above the threshold, not a fixed k), batched so memory stays at
one batch of results. The exact search costs N^2 D multiply-adds; `benchmarks/bench_dedup.py`
measures where IVF starts to pay and what recall of planted duplicates it keeps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svdcli.errors import SvdError

EXACT_LIMIT = 50_000  # clips; above it the IVF index: at 100k it was 2.8x faster at recall 1.0 (docs/benchmarks.md)
QUERY_BATCH = 4096


@dataclass(frozen=True)
class DuplicateConfig:
    """Settings of near-duplicate removal; every field changes the result (and the fingerprint)."""

    threshold: float = 0.95
    index: str = "auto"            # 'exact' | 'ivf' | 'auto' (exact up to exact_limit clips)
    exact_limit: int = EXACT_LIMIT
    nprobe: int = 16               # IVF cells visited per query


def normalise(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (a zero row stays zero)."""
    x = np.ascontiguousarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def build_index(emb: np.ndarray, kind: str, nprobe: int = 16, seed: int = 0):
    """A faiss inner-product index over unit rows `emb` (N, D): flat (exact) or IVF."""
    try:
        import faiss
    except ImportError:
        raise SvdError("near-duplicate removal needs faiss: pip install 'svdcli[dedup]' "
                       "(faiss-cpu)") from None
    n, d = emb.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 points per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = emb[rng.choice(n, min(n, nlist * 64), replace=False)] if n > nlist * 64 else emb
        index.train(train)
        index.nprobe = min(nprobe, nlist)
    else:
        raise SvdError(f"unknown index {kind!r}; use exact, ivf or auto")
    index.add(emb)
    return index


def neighbour_lists(emb: np.ndarray, threshold: float, kind: str, nprobe: int = 16,
                    batch: int = QUERY_BATCH, progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j), i != j, with emb[i].emb[j] >= threshold: CSR (offsets, neighbours, sims)."""
    index = build_index(emb, kind, nprobe)
    offsets, cols, sims = [np.zeros(1, np.int64)], [], []
    for start in range(0, len(emb), batch):
        lims, dist, ids = index.range_search(emb[start:start + batch], float(threshold) - 1e-6)
        lims = lims.astype(np.int64)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims))
        other = ids != rows  # a clip is its own neighbour; leave it out
        counts = np.bincount(rows[other] - start, minlength=len(lims) - 1)
        offsets.append(offsets[-1][-1] + np.cumsum(counts))
        cols.append(ids[other])
        sims.append(dist[other])
        if progress:
            progress(min(batch, len(emb) - start))
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return np.concatenate(offsets), cat(cols, np.int64), cat(sims, np.float32)


def keep_order(clip_ids: list[str], priority: np.ndarray) -> np.ndarray:
    """Visit order: highest priority first (NaN last), ties by clip_id."""
    pri = np.where(np.isnan(priority), -np.inf, priority)
    return np.lexsort((np.asarray(clip_ids), -pri))


def assign_groups(order: np.ndarray, offsets: np.ndarray, neighbours: np.ndarray,
                  sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy claim in `order`: (kept index per clip, -1 for kept clips; similarity to it)."""
    n = len(offsets) - 1
    owner = np.full(n, -1, np.int64)
    sim_to_owner = np.full(n, np.nan, np.float32)
    claimed = np.zeros(n, bool)
    for i in order:
        if claimed[i]:
            continue
        claimed[i] = True
        nb, s = neighbours[offsets[i]:offsets[i + 1]], sims[offsets[i]:offsets[i + 1]]
        free = ~claimed[nb]
        owner[nb[free]] = i
        sim_to_owner[nb[free]] = s[free]
        claimed[nb[free]] = True
    return owner, sim_to_owner


def find_duplicates(clip_ids: list[str], emb: np.ndarray, priority: np.ndarray,
                    cfg: DuplicateConfig = DuplicateConfig(), progress=None) -> tuple[list, np.ndarray]:
    """`duplicate_of` (kept clip's id or None) and the similarity to it, per clip."""
    if len(clip_ids) != len(emb):
        raise SvdError(f"{len(clip_ids)} clip ids but {len(emb)} embeddings")
    if not len(clip_ids):
        return [], np.zeros(0, np.float32)
    kind = cfg.index if cfg.index != "auto" else ("exact" if len(emb) <= cfg.exact_limit else "ivf")
    offsets, nb, sims = neighbour_lists(normalise(emb), cfg.threshold, kind, cfg.nprobe, progress=progress)
    owner, sim = assign_groups(keep_order(clip_ids, np.asarray(priority, np.float64)), offsets, nb, sims)
    return [clip_ids[o] if o >= 0 else None for o in owner], sim
