"""`make demo`: generate a corpus, curate it, pack shards, train a tiny model, sample a video.

Every step is a real `svd` command, printed before it runs, so the demo doubles as a worked
example. Each step resumes: rerunning after an interruption skips what is done.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parents[2]
console = Console(highlight=False)


def svd(*args: str, env: dict | None = None) -> None:
    """Run `svd ARGS` in a subprocess, echoing the command; stop the demo if it fails."""
    cmd = [sys.executable, "-m", "svdcli", *map(str, args)]
    console.print(f"\n[bold cyan]$ svd {shlex.join(map(str, args))}[/]")
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        console.print(f"[bold red]demo step failed (exit {result.returncode}); fix the error above and "
                      f"rerun `make demo`: finished steps are kept.[/]")
        raise SystemExit(result.returncode)
    console.print(f"[dim]({time.perf_counter() - t0:.1f} s)[/]")


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="demo", help="where everything goes (default: ./demo)")
    parser.add_argument("--videos", type=int, default=24, help="number of generated videos")
    parser.add_argument("--train-steps", type=int, default=300, help="tiny-model training steps")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    t0 = time.perf_counter()

    step("1/5 generate a procedural corpus")
    from svdcli.demo.corpus import make_corpus

    make_corpus(work / "videos", videos=args.videos)
    console.print(f"{args.videos} videos in {work / 'videos'} (ground truth: truth.json)")

    step("2/5 curate: cuts -> motion -> text -> caption -> clip -> filter")
    from svdcli.demo.tiny_models import write_tiny_models

    stand_ins = write_tiny_models(work / "weights")
    console.print("[yellow]no CLIP/CoCa weights are assumed on this machine: caption and clip use tiny random "
                  f"stand-in models from {work / 'weights'} (their captions and scores are meaningless); "
                  "text uses the DBNet detector shipped in rapidocr-onnxruntime.[/]")
    overrides = [a for key, value in stand_ins.items() for a in ("--set", f"{key}={value}")]
    svd("curate", "run", REPO / "pipelines" / "demo" / "curate.yaml", "--input", work / "videos",
        "--workdir", work / "curate", *overrides)
    manifest = work / "curate" / "manifests" / "filter.parquet"

    step("3/5 pack kept clips into WebDataset shards")
    svd("pack", "--manifest", manifest, "--out", work / "shards", "--frames", "8", "--size", "64x128",
        "--shard-size", "16")

    step("4/5 train a tiny video model (DeepSpeed, CPU, gloo)")
    train_args = ["train", "--stage", "video", "--config", REPO / "pipelines" / "demo" / "train.yaml",
                  "--data", work / "shards", "--out", work / "run", "--steps", str(args.train_steps)]
    if (work / "run").exists():
        train_args.append("--resume")
    # one intra-op thread: two OpenMP threads plus the loader worker oversubscribe a 2-core machine,
    # and spinning OpenMP threads then made steps ~15x slower (measured 12.7 s vs 0.8 s per step)
    svd(*train_args, env={"OMP_NUM_THREADS": "1"})

    step("5/5 sample a video from a conditioning frame")
    cond = _conditioning_frame(work)
    svd("sample", "--image", cond, "--checkpoint", work / "run", "--frames", "8",
        "--steps", "10", "--out", work / "sample.mp4")

    console.rule("[bold green]demo finished")
    for label, path in [("videos", work / "videos"), ("manifest", manifest),
                        ("report", work / "curate" / "report" / "index.html"), ("shards", work / "shards"),
                        ("training run", work / "run"), ("sample", work / "sample.mp4")]:
        console.print(f"{label:>13}: {path}")
    console.print(f"{'total time':>13}: {time.perf_counter() - t0:.0f} s")
    return 0


def _conditioning_frame(work: Path) -> Path:
    """The first frame of the first demo video, as a PNG."""
    out = work / "cond.png"
    if not out.exists():
        import cv2

        from svdcli.video.seek import read_frames_at

        frame = read_frames_at(work / "videos" / "demo_000.mp4", [0.0])[0]
        cv2.imwrite(str(out), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return out


if __name__ == "__main__":
    sys.exit(main())
