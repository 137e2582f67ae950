"""Frames per second of text detection (DBNet, CRAFT) and CLIP image embedding, batch 1 vs batched.

Baseline: batch 1 (one model call per frame), the way a naive per-frame loop runs; the ratio is
batched / batch 1. Weights are random (same cost as trained ones). CPU runs use small models or few
frames so the whole script stays short; with a CUDA GPU it also times the full-size ViT-L-14 in
bf16 (target: >= 500 frames/s) and CRAFT on the GPU.

    .venv/bin/python -m benchmarks.bench_text_clip
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


THREADS = 1  # one intra-op thread: per-core throughput, and no spin-waiting when cores are shared


def frames_per_second(fn, frames: np.ndarray, batch: int, repeats: int = 1) -> tuple[float, float]:
    """Run fn over `frames` in chunks of `batch` after a one-frame warm-up.

    Returns (frames per wall second, frames per CPU second of this process); with one thread the
    second is the per-core rate and stays true when other jobs share the cores.
    """
    fn(frames[:1])
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for i in range(0, len(frames), batch):
            fn(frames[i:i + batch])
    n = repeats * len(frames)
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def compare(label: str, fn, frames: np.ndarray, batch: int, repeats: int = 1) -> None:
    (one, one_cpu), (many, many_cpu) = (frames_per_second(fn, frames, b, repeats) for b in (1, batch))
    print(f"{label:46s} batch 1: {one:7.2f} fps ({one_cpu:6.2f}/cpu-s)   batch {batch}: {many:7.2f} fps "
          f"({many_cpu:6.2f}/cpu-s)   ratio {many / one:5.2f}x", flush=True)


def test_frames(n: int, width: int, height: int) -> np.ndarray:
    """Textured frames, a third with rendered captions (detectors cost more with text to box)."""
    import cv2

    from svdcli.video.synth import texture

    frames = np.stack([texture(k % 4, height, width) for k in range(n)])
    for f in frames[::3]:
        cv2.putText(f, "Breaking News 24/7", (width // 10, height // 2), cv2.FONT_HERSHEY_SIMPLEX,
                    width / 500, (255, 255, 255), 2, cv2.LINE_AA)
    return frames


def bench_text(device: str) -> None:
    import torch
    from easyocr.craft import CRAFT

    from svdcli.curate.stages.text import CraftDetector, DBNetDetector

    frames = test_frames(16, 640, 384)  # the stage's default analysis size for 16:9 video (long side 640)
    dbnet = DBNetDetector(device, threads=THREADS, batch_size=16)
    compare(f"text dbnet 640x384 ({device})", lambda f: dbnet.detect(f), frames, 16)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(CRAFT().state_dict(), Path(tmp) / "craft_mlt_25k.pth")
        craft = CraftDetector(Path(tmp) / "craft_mlt_25k.pth", device, batch_size=16)
    n = 16 if device == "cuda" else 4  # CRAFT (VGG16) is slow on CPU: few frames keep the run short
    compare(f"text craft 640x384 ({device}{', int8 dynamic' if device == 'cpu' else ''})",
            lambda f: craft.detect(f), frames[:n], n)


def bench_clip(model: str, device: str, n: int, batch: int, repeats: int = 1) -> None:
    import open_clip
    import torch

    from svdcli.curate.scorers.open_clip_models import ClipEmbedder

    net = open_clip.create_model(model, device=device).eval()  # random weights: timing only
    embedder = ClipEmbedder(net, open_clip.get_tokenizer(model), device, batch_size=batch)
    frames = test_frames(n, embedder.side, embedder.side)
    precision = "bf16 autocast" if device == "cuda" else "fp32"
    compare(f"clip {model} image embedding ({device}, {precision})", embedder.embed_images, frames, batch, repeats)
    del net
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    import os

    import torch

    torch.set_num_threads(THREADS)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"torch threads {torch.get_num_threads()}; cuda {torch.cuda.is_available()}")
    bench_text("cpu")
    bench_clip("ViT-B-32", "cpu", n=32, batch=16)
    bench_clip("ViT-L-14", "cpu", n=16, batch=16)  # the stage's default model
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        bench_text("cuda")
        bench_clip("ViT-L-14", "cuda", n=1024, batch=256, repeats=2)
    else:
        print("no CUDA GPU: GPU rows not run")


if __name__ == "__main__":
    main()
