"""The training loader: exactly-once epochs across workers and ranks, frames, conditioning, seeds."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch
from test_pack import SIZE, make_corpus

from svdcli.shards.frames import decode_mp4
from svdcli.shards.loader import ShardDataset, LoaderConfig, make_loader, split_shards
from svdcli.shards.pack import PackConfig, run_pack


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loader")
    manifest, _ = make_corpus(folder, videos=4, clips_per_video=2)  # 8 clips, 7 kept
    cfg = PackConfig(size=SIZE, frames=8, min_frames=4, fps=8.0, shard_size=2)
    run_pack(manifest, folder / "shards", cfg, workers=1, progress=False)
    keys = pq.read_table(folder / "shards" / "index.parquet").column("key").to_pylist()
    return folder / "shards", sorted(keys)


def epoch_keys(loader) -> list[str]:
    return [k for _, cond in loader for k in cond["key"]]


def test_two_workers_yield_every_sample_once_per_epoch(shards):
    out, keys = shards
    loader = make_loader(out, batch_size=3, num_frames=4, num_workers=2, shuffle=4, seed=1)
    orders = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        got = epoch_keys(loader)
        assert Counter(got) == Counter(keys), f"epoch {epoch}: not every sample exactly once"
        orders.append(got)
    assert orders[0] != orders[1]  # set_epoch reaches the persistent workers and reshuffles


def test_ranks_and_workers_split_shards_exactly_once(shards):
    out, keys = shards
    per_rank = [epoch_keys(make_loader(out, batch_size=2, num_frames=4, num_workers=0, rank=r, world_size=2))
                for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert Counter(per_rank[0] + per_rank[1]) == Counter(keys)
    urls = [f"{i:06d}.tar" for i in range(11)]
    for epoch in range(3):
        parts = [split_shards(urls, epoch, 0, True, r, 3, w, 2) for r in range(3) for w in range(2)]
        assert sorted(itertools.chain(*parts)) == urls
    assert split_shards(urls, 0, 0, True, 0, 3, 0, 2) != split_shards(urls, 1, 0, True, 0, 3, 0, 2)


def test_batches_are_the_stored_frames_in_minus_one_to_one(shards):
    import webdataset as wds

    out, _ = shards
    stored = {s["__key__"]: s for s in wds.WebDataset(sorted(map(str, out.glob("*.tar"))), shardshuffle=False)}
    loader = make_loader(out, batch_size=2, num_frames=4, stride=2, num_workers=0, seed=3)
    for video, cond in loader:
        assert video.dtype == torch.float32 and video.shape[1:] == (4, 3, *SIZE)  # (B, T, C, H, W)
        assert video.min() >= -1.0 and video.max() <= 1.0
        assert cond["fps_id"].tolist() == [3] * len(video)  # 8 fps stored, every 2nd frame: 4 fps
        for b, key in enumerate(cond["key"]):
            meta = json.loads(stored[key]["json"])
            start = int(cond["frame_start"][b])
            frames = decode_mp4(stored[key]["mp4"])[start:start + 8:2]  # (T, H, W, C)
            want = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
            torch.testing.assert_close(video[b], want)
            assert int(cond["motion_bucket_id"][b]) == meta["motion_bucket_id"]
            assert cond["caption"][b] == meta["caption"]


def test_long_windows_shrink_the_stride_and_short_clips_are_skipped(shards):
    out, keys = shards
    loader = make_loader(out, batch_size=8, num_frames=8, stride=2, num_workers=0)
    (video, cond), = list(loader)
    assert cond["frame_stride"].tolist() == [1] * len(keys) and cond["fps_id"].tolist() == [7] * len(keys)
    with pytest.warns(UserWarning, match="9 frames|num_frames 9"):
        assert list(make_loader(out, batch_size=2, num_frames=9, num_workers=0)) == []


def test_same_seed_same_stream_and_pipe_urls_work(shards):
    out, _ = shards
    paths = sorted(str(p) for p in out.glob("*.tar"))
    a = ShardDataset(paths, LoaderConfig(num_frames=4, seed=7))
    b = ShardDataset([f"pipe:cat {p}" for p in paths], LoaderConfig(num_frames=4, seed=7))
    first = [(c["key"], c["frame_start"]) for _, c in a]
    assert first == [(c["key"], c["frame_start"]) for _, c in b]
    a.set_epoch(1)
    assert [(c["key"], c["frame_start"]) for _, c in a] != first


def test_resampled_stream_is_endless_and_resizes(shards):
    out, keys = shards
    ds = ShardDataset(out, LoaderConfig(num_frames=2, size=(32, 48), resampled=True, shuffle=0))
    items = list(itertools.islice(iter(ds), 3 * len(keys)))
    assert len(items) == 3 * len(keys) and items[0][0].shape == (2, 3, 32, 48)


def test_a_truncated_shard_is_skipped_with_a_warning(shards, tmp_path):
    out, keys = shards
    paths = sorted(out.glob("*.tar"))
    broken = tmp_path / "broken.tar"
    broken.write_bytes(paths[0].read_bytes()[:3000])
    ds = ShardDataset([str(broken)] + [str(p) for p in paths[1:]], LoaderConfig(num_frames=4, shuffle=0))
    with pytest.warns(UserWarning):
        got = [c["key"] for _, c in ds]
    assert set(got) < set(keys) and len(got) >= len(keys) - 2


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="svd pack"):
        make_loader(tmp_path, batch_size=1)


def without_fps(src, dst, drop: int = 1):
    """A copy of shard `src` whose first `drop` samples' json has no `fps`."""
    import io
    import tarfile

    keys = []
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read()
            key = member.name.split(".", 1)[0]  # one json per sample key
            if member.name.endswith(".json") and len(keys) < drop:
                keys.append(key)
                meta = json.loads(data)
                del meta["fps"]
                data = json.dumps(meta).encode()
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    return keys


def test_a_sample_without_fps_is_skipped_and_counted(shards, tmp_path):
    out, keys = shards
    paths = sorted(out.glob("*.tar"))
    bad = without_fps(paths[0], tmp_path / "000000.tar")
    urls = [str(tmp_path / "000000.tar")] + [str(p) for p in paths[1:]]
    ds = ShardDataset(urls, LoaderConfig(num_frames=4, shuffle=0))
    with pytest.warns(UserWarning, match=f"skipping sample {bad[0]}: its json has no fps"):
        items = list(ds)
    assert sorted(c["key"] for _, c in items) == sorted(set(keys) - set(bad))
    assert sum(c["skipped"] for _, c in items) == 1
    assert [c["skipped"] for _, c in items][0] == 1  # counted with the next sample of the stream
