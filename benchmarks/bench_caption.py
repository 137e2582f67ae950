"""Captioning throughput: clips/s and output tokens/s of the caption engines at batch 1, 8 and 32.

Baseline: batch 1 (one generate call per clip); the ratio is batch N / batch 1. Engines are the
stage's own (CoCa through open_clip, the transformers VLM over 8 frames, the LLM summary), with
tiny random models (svdcli/demo/tiny_models.py), so the rates show the engines' overhead and
batching, not a real model's cost. One size row measures a causal LM of Qwen2.5-0.5B's shape
(random weights, fp32) as the summary engine, the cost per CPU core of a real small LLM. The
whole command (`svd curate caption`, start-up and decode included) is timed against the CoCa
command on the same clips. Decoding is greedy with a fixed number of new tokens (random weights
seldom stop early), so tokens/s is the decode rate. GPU rows run only with a CUDA GPU.

    .venv/bin/python -m benchmarks.bench_caption
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = 1  # one intra-op thread: per-core rates, and no spin-waiting when cores are shared
BATCHES = (1, 8, 32)
CLIPS = 32
FRAMES = 8
NEW_TOKENS = 16


def rate(fn, items: list, batch: int) -> tuple[float, float, float]:
    """Run fn(batch of items) over `items` after a one-item warm-up: (clips/s, tokens/s, tokens/cpu-s)."""
    fn(items[:1])
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    for i in range(0, len(items), batch):
        tokens += sum(g.tokens for g in fn(items[i:i + batch]))
    wall, cpu = time.perf_counter() - t0, max(time.process_time() - c0, 1e-9)
    return len(items) / wall, tokens / wall, tokens / cpu


def report(label: str, fn, items: list, batches=BATCHES, rounds: int = 3) -> None:
    """Rates at each batch size, measured in `rounds` interleaved rounds (the load of a shared machine
    changes over a run); the median round is printed, with its ratio to batch 1."""
    runs = {b: [] for b in batches}
    for _ in range(rounds):
        for batch in batches:
            runs[batch].append(rate(fn, items, batch))
    base = None
    for batch in batches:
        clips, tokens, per_cpu = sorted(runs[batch])[len(runs[batch]) // 2]
        base = base or clips
        print(f"{label:44s} batch {batch:2d}: {clips:8.2f} clips/s {tokens:9.1f} tokens/s ({per_cpu:8.1f}/cpu-s)"
              f"   x{clips / base:5.2f} vs batch 1 (median of {rounds})", flush=True)


def test_clips(n: int, frames: int, height: int, width: int) -> list[np.ndarray]:
    from svdcli.video.synth import texture

    return [np.stack([texture(k * 7 + f % 3, height, width) for f in range(frames)]) for k in range(n)]


def bench_engines(folder: Path, device: str) -> None:
    from svdcli.curate.scorers.captioning.coca import CocaCaptioner
    from svdcli.curate.scorers.captioning.prompts import SUMMARY_PROMPT, VIDEO_PROMPT
    from svdcli.curate.scorers.captioning.summary import Summarizer
    from svdcli.curate.scorers.captioning.vlm import VlmCaptioner
    from svdcli.curate.stages.caption import CaptionConfig
    from svdcli.demo.tiny_models import write_tiny_coca, write_tiny_llm, write_tiny_vlm
    from svdcli.weights import hf_model, open_clip_weights

    clips = test_clips(CLIPS, FRAMES, 252, 448)  # 16:9 frames at the stage's default long side (448)
    coca_files = write_tiny_coca(folder)
    decoding = CaptionConfig(generation="top_k", top_k=1, seq_len=NEW_TOKENS + 1, min_seq_len=NEW_TOKENS)
    coca = CocaCaptioner(open_clip_weights(coca_files["model"], coca_files["pretrained"]), coca_files["model"],
                         decoding, device, batch_size=max(BATCHES))
    middle = [c[FRAMES // 2, :coca.side, :coca.side] for c in clips]
    report(f"tiny CoCa, middle frame ({device})", lambda b: coca.caption(np.stack(b)), middle)
    vlm = VlmCaptioner(hf_model(str(write_tiny_vlm(folder / "vlm")), "--pretrained"), VIDEO_PROMPT,
                       max_new_tokens=NEW_TOKENS, device=device, batch_size=max(BATCHES))
    report(f"tiny Qwen2.5-VL, {FRAMES} frames ({device})", lambda b: vlm.caption(b, [4.0] * len(b)), clips)
    llm = Summarizer(hf_model(str(write_tiny_llm(folder / "llm")), "--summarize"), SUMMARY_PROMPT,
                     max_new_tokens=NEW_TOKENS, device=device, batch_size=max(BATCHES))
    pairs = [(f"a dog runs on the beach number {k}", f"the camera pans over a dog {k}") for k in range(CLIPS)]
    report(f"tiny Qwen2 summary ({device})", llm.summarize, pairs)


def bench_small_llm(folder: Path, device: str) -> None:
    """A causal LM of Qwen2.5-0.5B's shape (494M parameters, random weights) as the summary engine."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from svdcli.curate.scorers.captioning.prompts import SUMMARY_PROMPT
    from svdcli.curate.scorers.captioning.summary import Summarizer
    from svdcli.demo.tiny_models import tiny_tokenizer
    from svdcli.weights import hf_model

    path = folder / "qwen2.5-0.5b-shape"
    tokenizer = tiny_tokenizer()
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    llm = Summarizer(hf_model(str(path), "--summarize"), SUMMARY_PROMPT, max_new_tokens=NEW_TOKENS, device=device,
                     batch_size=8)
    pairs = [(f"a dog runs on the beach {k}", f"the camera pans over a dog {k}") for k in range(8)]
    report(f"Qwen2.5-0.5B-shape summary, fp32 ({device})", llm.summarize, pairs, (1, 8), rounds=1)


def bench_command(folder: Path) -> None:
    """`svd curate caption` end to end (start-up, decode, models, manifest) on 16 clips of one video."""
    from svdcli.demo.tiny_models import write_tiny_coca, write_tiny_vlm
    from svdcli.manifest.io import table_from_rows, write_manifest
    from svdcli.video.synth import Shot, write_video

    video = folder / "v.mp4"
    write_video(video, [Shot(48, seed=s, speed=(2.0, 1.0)) for s in range(16)], size=(640, 360), fps=24.0)
    rows = [dict(clip_id=f"c{k}", video_id="v", video_path=str(video), start_time=2.0 * k, end_time=2.0 * k + 2.0,
                 start_frame=48 * k, end_frame=48 * k + 48, num_frames=48, fps=24.0, width=640, height=360,
                 status="ok") for k in range(16)]
    manifest = write_manifest(table_from_rows(rows, list(rows[0])), folder / "clips.parquet")
    coca = write_tiny_coca(folder)
    commands = {
        "CoCa (tiny), middle frame": ["--model", coca["model"], "--pretrained", coca["pretrained"],
                                      "--generation", "top_k", "--seq-len", str(NEW_TOKENS + 1)],
        f"VLM (tiny), {FRAMES} frames": ["--model", "vlm", "--pretrained", str(write_tiny_vlm(folder / "vlm")),
                                          "--frames", str(FRAMES), "--max-new-tokens", str(NEW_TOKENS)],
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(3):  # interleaved: both commands see the same load
        for label, args in commands.items():
            out = folder / "out.parquet"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "svdcli", "curate", "caption", "-m", str(manifest), "-o", str(out),
                            "--batch-size", "16", "--no-progress", "--device", "cpu", *args],
                           check=True, env=env, capture_output=True)
            times[label].append(time.perf_counter() - t0)
    median = {label: sorted(t)[1] for label, t in times.items()}
    for label, seconds in median.items():
        print(f"whole command, {label:28s}: {seconds:6.1f} s for 16 clips ({16 / seconds:5.2f} clips/s, "
              "start-up included; median of 3)", flush=True)
    first, second = median.values()
    print(f"whole command ratio VLM / CoCa: {second / first:.2f}x", flush=True)


def main() -> None:
    import torch

    torch.set_num_threads(THREADS)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads "
          f"{torch.get_num_threads()}; cuda {torch.cuda.is_available()}; {NEW_TOKENS} new tokens per caption")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_engines(folder, "cpu")
        bench_small_llm(folder, "cpu")
        bench_command(folder)
        if torch.cuda.is_available():
            bench_engines(folder, "cuda")
            bench_small_llm(folder, "cuda")
        else:
            print("GPU rows (tiny engines, Qwen2.5-0.5B-shape summary, vLLM): not run: no GPU")


if __name__ == "__main__":
    main()
