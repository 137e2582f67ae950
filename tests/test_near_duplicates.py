"""Near-duplicate groups: planted duplicates found, every drop really similar, exact == IVF."""
import numpy as np
import pytest

from numeric import assert_close_ulps

pytest.importorskip("faiss")

from svdcli.curate.scorers.near_duplicates import (DuplicateConfig, assign_groups, find_duplicates,  # noqa: E402
                                           neighbour_lists, normalise)


def corpus(n, d=64, dups=100, seed=0):
    """Clustered unit vectors (intra-cluster cosine ~0.4) with `dups` planted near copies (cosine ~0.98)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d))
    x = centers[rng.integers(0, 20, n)] + 1.2 * rng.standard_normal((n, d))
    x = normalise(x)
    src, dst = np.split(rng.choice(n, 2 * dups, replace=False), 2)
    x[dst] = normalise(x[src] + 0.2 * normalise(rng.standard_normal((dups, d))))
    return x, src, dst


def test_planted_duplicates_are_found_and_each_drop_is_similar():
    x, src, dst = corpus(3000)
    ids = [f"c{i:05d}" for i in range(len(x))]
    dup, sim = find_duplicates(ids, x, np.zeros(len(x)), DuplicateConfig(threshold=0.95))
    dropped = {i for i, d in enumerate(dup) if d is not None}
    assert len(dropped) == len(src)  # one of each planted pair, nothing else
    assert all((s in dropped) != (d in dropped) for s, d in zip(src, dst))
    index = {c: i for i, c in enumerate(ids)}
    for i in dropped:
        assert float(x[i] @ x[index[dup[i]]]) == pytest.approx(float(sim[i]), abs=1e-4)
        assert sim[i] >= 0.95
    assert np.isnan(sim[[i for i in range(len(x)) if i not in dropped]]).all()


def test_keep_policy_keeps_the_highest_priority():
    x, src, dst = corpus(500, dups=20)
    ids = [f"c{i:05d}" for i in range(len(x))]
    priority = np.zeros(len(x))
    priority[dst] = 10.0  # the copies are "longer": they are kept, the originals dropped
    dup, _ = find_duplicates(ids, x, priority)
    assert all(dup[s] == ids[d] and dup[d] is None for s, d in zip(src, dst))


def test_chain_drops_only_direct_neighbours():
    """A ~ B and B ~ C but A !~ C: B is dropped for A, C is kept (no transitive drop)."""
    offsets = np.array([0, 1, 3, 4])
    nb = np.array([1, 0, 2, 1])
    sims = np.full(4, 0.96, np.float32)
    owner, _ = assign_groups(np.array([0, 1, 2]), offsets, nb, sims)
    assert owner.tolist() == [-1, 0, -1]


def test_exact_and_ivf_agree_on_planted_pairs():
    x, _, _ = corpus(4000, dups=200, seed=1)
    exact = neighbour_lists(x, 0.95, "exact")
    ivf = neighbour_lists(x, 0.95, "ivf", nprobe=8)
    pairs = lambda o, n: {(i, j) for i in range(len(o) - 1) for j in n[o[i]:o[i + 1]]}  # noqa: E731
    e, v = pairs(exact[0], exact[1]), pairs(ivf[0], ivf[1])
    assert len(e) == 400  # 200 planted pairs, both directions
    assert v <= e and len(v) >= 0.97 * len(e)


def test_mismatched_lengths_and_empty_input():
    with pytest.raises(Exception, match="2 clip ids but 3"):
        find_duplicates(["a", "b"], np.ones((3, 4)), np.zeros(2))
    assert find_duplicates([], np.zeros((0, 4)), np.zeros(0))[0] == []


def test_a_search_index_pickles_to_the_same_answers():
    """What a Ray worker gets from the object store searches as the driver's index does (IVF
    keeps its nprobe)."""
    import pickle

    from svdcli.curate.scorers.near_duplicates import SearchIndex, build_index, normalise

    emb = normalise(np.random.default_rng(1).normal(size=(3000, 16)))
    index = SearchIndex(build_index(emb, "ivf", nprobe=3), emb)
    copy = pickle.loads(pickle.dumps(index))
    assert copy.index.nprobe == 3
    counts, ids, sims = index.search((0, 500), 0.5)
    copied = copy.search((0, 500), 0.5)
    np.testing.assert_array_equal(copied[0], counts)
    np.testing.assert_array_equal(copied[1], ids)
    assert_close_ulps(copied[2], sims)  # inner products: computed
