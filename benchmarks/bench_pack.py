"""Packing throughput (clips/s) and loader throughput (samples/s at 14x256x384).

Baselines, in the same run:
- packing with 2 workers vs 1 worker (the same code, serial), and vs reading every clip with
  its own seek + decode (no shared decoding pass for neighbouring clips of a video);
- the training loader (0 or 2 spawned workers, shuffle, window sampling, uint8 batches made
  float after batching) vs a plain single-process webdataset loop that decodes each mp4 and
  builds the same float batches;
- mp4 vs npy samples: shard bytes per sample and load speed.
On a GPU machine it also times the loader feeding the GPU (pinned memory, non-blocking copy).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

SRC_W, SRC_H, FPS = 640, 360, 24.0
VIDEOS, CLIPS_PER_VIDEO, CLIP_FRAMES = 12, 4, 48  # 48 clips of 2 s
SIZE, FRAMES = (256, 384), 14


def make_corpus(folder: Path) -> Path:
    from svdcli.manifest.io import table_from_rows, write_manifest
    from svdcli.video.probe import video_id
    from svdcli.video.synth import Shot, write_video

    rows = []
    for v in range(VIDEOS):
        path = (folder / f"v{v}.mp4").resolve()
        write_video(path, [Shot(CLIPS_PER_VIDEO * CLIP_FRAMES, seed=v, speed=(4.0, 1.0))], size=(SRC_W, SRC_H), fps=FPS,
                    gop=48)  # a keyframe every 2 s, like most camera and web video
        for c in range(CLIPS_PER_VIDEO):
            a, b = c * CLIP_FRAMES, (c + 1) * CLIP_FRAMES
            rows.append(dict(clip_id=f"{video_id(path)}_{a}_{b}", video_id=video_id(path), video_path=str(path),
                             start_time=a / FPS, end_time=b / FPS, start_frame=a, end_frame=b, num_frames=b - a,
                             fps=FPS, width=SRC_W, height=SRC_H, status="ok", motion_score=1.0 + v,
                             caption=f"video {v}", keep=True))
    return write_manifest(table_from_rows(rows, list(rows[0])), folder / "clips.parquet")


def bench_pack(manifest: Path, folder: Path) -> dict[str, Path]:
    from svdcli.shards import samples
    from svdcli.shards.pack import PackConfig, run_pack

    n = VIDEOS * CLIPS_PER_VIDEO
    outs, rates = {}, {}
    runs = (("1 worker, decode per clip", "mp4", 1, 1), ("1 worker (baseline)", "mp4", 1, samples.MAX_GROUP),
            ("2 workers", "mp4", 2, samples.MAX_GROUP), ("2 workers, npy", "npy", 2, samples.MAX_GROUP))
    for name, fmt, workers, group in runs:
        out = folder / f"shards-{fmt}-{workers}-{group}"
        cfg = PackConfig(size=SIZE, frames=FRAMES, min_frames=FRAMES, fps=8.0, shard_size=4, format=fmt)
        default = samples.MAX_GROUP
        samples.MAX_GROUP = group  # takes effect in this process only, i.e. with 1 worker
        t0 = time.perf_counter()
        run_pack(manifest, out, cfg, workers=workers, progress=False)
        rates[name] = n / (time.perf_counter() - t0)
        samples.MAX_GROUP = default
        stats = json.loads((out / "stats.json").read_text())
        outs[fmt] = out
        print(f"pack {name:22s} {rates[name]:6.2f} clips/s   {stats['bytes'] / stats['samples'] / 1e6:6.2f} MB/sample")
    print(f"pack speed-up 2 workers / 1 worker: {rates['2 workers'] / rates['1 worker (baseline)']:.2f}x; "
          f"one pass per video / decode per clip: "
          f"{rates['1 worker (baseline)'] / rates['1 worker, decode per clip']:.2f}x")
    return outs


def plain_webdataset_rate(out: Path, batch_size: int = 4) -> float:
    """Baseline: one process, plain webdataset, each sample's mp4 decoded and turned into the same
    float (T, C, H, W) tensor, stacked into batches; no shuffle, no window sampling."""
    import torch
    import webdataset as wds

    from svdcli.shards.frames import decode_mp4

    t0, n, batch = time.perf_counter(), 0, []
    for sample in wds.WebDataset(sorted(map(str, out.glob("*.tar"))), shardshuffle=False):
        frames = torch.from_numpy(decode_mp4(sample["mp4"])[:FRAMES])
        batch.append(frames.permute(0, 3, 1, 2).float() / 127.5 - 1)  # (T, C, H, W)
        if len(batch) == batch_size:
            n += len(torch.stack(batch))
            batch = []
    return (n + len(batch)) / (time.perf_counter() - t0)


def loader_rate(out: Path, workers: int, epochs: int = 3, cuda: bool = False) -> float:
    """Samples/s over `epochs` epochs after the first (spawn start-up is paid once per run)."""
    import torch

    from svdcli.shards.loader import make_loader

    loader = make_loader(out, batch_size=4, num_frames=FRAMES, num_workers=workers, shuffle=16,
                         device="cuda" if cuda else None)
    for _ in loader:  # warm-up epoch: starts the workers
        pass
    t0, n = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        for video, _ in loader:
            n += len(video)
    if cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        outs = bench_pack(make_corpus(folder), folder)
        base = plain_webdataset_rate(outs["mp4"])
        print(f"load plain webdataset, same tensors (baseline)  {base:6.1f} samples/s")
        for label, out, workers in (("loader mp4, 0 workers", outs["mp4"], 0), ("loader mp4, 2 workers", outs["mp4"], 2),
                                    ("loader npy, 2 workers", outs["npy"], 2)):
            rate = loader_rate(out, workers)
            print(f"load {label:42s} {rate:6.1f} samples/s  ({rate / base:.2f}x baseline)")
        if torch.cuda.is_available():
            rate = loader_rate(outs["mp4"], 2, cuda=True)
            print(f"load loader mp4, 2 workers -> GPU (pinned)          {rate:6.1f} samples/s")
        else:
            print("load -> GPU: not run (no GPU)")


if __name__ == "__main__":
    main()
