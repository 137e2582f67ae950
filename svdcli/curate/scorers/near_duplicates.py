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

On a Ray cluster (`executor`) the index is built once on the driver and shared through the
object store (`SearchIndex` pickles as faiss's serialised bytes); each task range-searches one
block of queries, and the driver assembles the blocks in order, so the neighbour lists (and
the groups) are the single-machine ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svdcli.errors import SvdError
from svdcli.optional import imported

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
    faiss = imported("faiss", "near-duplicate removal")
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


class SearchIndex:
    """A faiss index and the unit rows it holds, picklable (as faiss's serialised bytes) so a
    cluster's workers get it from the object store once each."""

    def __init__(self, index, emb: np.ndarray):
        self.index, self.emb = index, emb

    def __getstate__(self):
        import faiss

        return {"index": faiss.serialize_index(self.index), "emb": self.emb, "nprobe": getattr(self.index, "nprobe", None)}

    def __setstate__(self, state):
        import faiss

        self.index, self.emb = faiss.deserialize_index(state["index"]), state["emb"]
        if state["nprobe"] is not None:
            faiss.extract_index_ivf(self.index).nprobe = state["nprobe"]

    def search(self, block: tuple[int, int], threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbours of rows start..stop-1 other than themselves: (counts per row, ids, sims)."""
        start, stop = block
        lims, dist, ids = self.index.range_search(self.emb[start:stop], float(threshold) - 1e-6)
        lims = lims.astype(np.int64)
        rows = np.repeat(np.arange(start, stop), np.diff(lims))
        other = ids != rows  # a clip is its own neighbour; leave it out
        return np.bincount(rows[other] - start, minlength=stop - start), ids[other], dist[other]


def _search_block(block: tuple[int, int], shared: tuple[SearchIndex, float]):
    index, threshold = shared
    return index.search(block, threshold)


def neighbour_lists(emb: np.ndarray, threshold: float, kind: str, nprobe: int = 16,
                    batch: int = QUERY_BATCH, progress=None,
                    executor=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j), i != j, with emb[i].emb[j] >= threshold: CSR (offsets, neighbours, sims).
    `executor` (a RayExecutor) searches the query blocks as tasks on its cluster."""
    index = SearchIndex(build_index(emb, kind, nprobe), emb)
    blocks = [(start, min(start + batch, len(emb))) for start in range(0, len(emb), batch)]
    if executor is None:
        results = ((block, index.search(block, threshold)) for block in blocks)
    else:
        results = executor.map_calls(_search_block, blocks, shared=(index, float(threshold)))
    found = {}
    for block, result in results:
        if not isinstance(result, tuple):  # a TaskFailure: the block's search raised or its workers died
            raise SvdError(f"near-duplicate search of clips {block[0]}..{block[1] - 1} failed: {result.message}")
        found[block] = result
        if progress:
            progress(block[1] - block[0])
    counts, cols, sims = zip(*(found[b] for b in blocks)) if blocks else ((), (), ())
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(cat(counts, np.int64))])
    return offsets, cat(cols, np.int64), cat(sims, np.float32)


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
                    cfg: DuplicateConfig = DuplicateConfig(), progress=None, executor=None) -> tuple[list, np.ndarray]:
    """`duplicate_of` (kept clip's id or None) and the similarity to it, per clip."""
    if len(clip_ids) != len(emb):
        raise SvdError(f"{len(clip_ids)} clip ids but {len(emb)} embeddings")
    if not len(clip_ids):
        return [], np.zeros(0, np.float32)
    kind = cfg.index if cfg.index != "auto" else ("exact" if len(emb) <= cfg.exact_limit else "ivf")
    offsets, nb, sims = neighbour_lists(normalise(emb), cfg.threshold, kind, cfg.nprobe, progress=progress,
                                        executor=executor)
    owner, sim = assign_groups(keep_order(clip_ids, np.asarray(priority, np.float64)), offsets, nb, sims)
    return [clip_ids[o] if o >= 0 else None for o in owner], sim
