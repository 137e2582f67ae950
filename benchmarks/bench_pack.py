"""Packing throughput (clips/s) and loader throughput (samples/s at 14x256x384).

Baselines, in the same run:
- packing with 2 workers vs 1 worker (the same code, serial);
- the training loader (2 spawned workers, shuffle, window sampling) vs a plain single-process
  webdataset read that only decodes each sample's mp4;
- mp4 vs npy samples: shard bytes per sample and load speed.
On a GPU machine it also times the loader feeding the GPU (pinned memory, non-blocking copy).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

SRC_W, SRC_H, FPS = 640, 360, 24.0
VIDEOS, CLIPS_PER_VIDEO, CLIP_FRAMES = 4, 4, 48  # 16 clips of 2 s
SIZE, FRAMES = (256, 384), 14


def make_corpus(folder: Path) -> Path:
    from svdcli.manifest.io import table_from_rows, write_manifest
    from svdcli.video.probe import video_id
    from svdcli.video.synth import Shot, write_video

    rows = []
    for v in range(VIDEOS):
        path = (folder / f"v{v}.mp4").resolve()
        write_video(path, [Shot(CLIPS_PER_VIDEO * CLIP_FRAMES, seed=v, speed=(4.0, 1.0))], size=(SRC_W, SRC_H), fps=FPS)
        for c in range(CLIPS_PER_VIDEO):
            a, b = c * CLIP_FRAMES, (c + 1) * CLIP_FRAMES
            rows.append(dict(clip_id=f"{video_id(path)}_{a}_{b}", video_id=video_id(path), video_path=str(path),
                             start_time=a / FPS, end_time=b / FPS, start_frame=a, end_frame=b, num_frames=b - a,
                             fps=FPS, width=SRC_W, height=SRC_H, status="ok", motion_score=1.0 + v,
                             caption=f"video {v}", keep=True))
    return write_manifest(table_from_rows(rows, list(rows[0])), folder / "clips.parquet")


def bench_pack(manifest: Path, folder: Path) -> dict[str, Path]:
    from svdcli.shards.pack import PackConfig, run_pack

    n = VIDEOS * CLIPS_PER_VIDEO
    outs, rates = {}, {}
    for name, fmt, workers in (("1 worker (baseline)", "mp4", 1), ("2 workers", "mp4", 2), ("2 workers, npy", "npy", 2)):
        out = folder / f"shards-{fmt}-{workers}"
        cfg = PackConfig(size=SIZE, frames=FRAMES, min_frames=FRAMES, fps=8.0, shard_size=4, format=fmt)
        t0 = time.perf_counter()
        run_pack(manifest, out, cfg, workers=workers, progress=False)
        rates[name] = n / (time.perf_counter() - t0)
        stats = json.loads((out / "stats.json").read_text())
        outs[fmt] = out
        print(f"pack {name:22s} {rates[name]:6.2f} clips/s   {stats['bytes'] / stats['samples'] / 1e6:6.2f} MB/sample")
    print(f"pack speed-up 2 workers / 1 worker: {rates['2 workers'] / rates['1 worker (baseline)']:.2f}x")
    return outs


def plain_webdataset_rate(out: Path) -> float:
    """Baseline: one process, webdataset iteration + mp4 decode of every sample, nothing else."""
    import webdataset as wds

    from svdcli.shards.frames import decode_mp4

    t0, n = time.perf_counter(), 0
    for sample in wds.WebDataset(sorted(map(str, out.glob("*.tar"))), shardshuffle=False):
        decode_mp4(sample["mp4"])
        n += 1
    return n / (time.perf_counter() - t0)


def loader_rate(out: Path, workers: int, epochs: int = 3, cuda: bool = False) -> float:
    """Samples/s over `epochs` epochs after the first (spawn start-up is paid once per run)."""
    import torch

    from svdcli.shards.loader import make_loader

    loader = make_loader(out, batch_size=4, num_frames=FRAMES, num_workers=workers, shuffle=16, pin_memory=cuda)
    for _ in loader:  # warm-up epoch: starts the workers
        pass
    t0, n = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        loader.dataset.set_epoch(epoch)
        for video, _ in loader:
            if cuda:
                video = video.cuda(non_blocking=True)
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
        print(f"load plain webdataset + mp4 decode (baseline)   {base:6.1f} samples/s")
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
