"""The demo corpus: a few dozen short procedural videos whose curation outcome is known.

Each video mixes shots (textured pans at several speeds, static shots, shots with captions
burned in) joined by hard cuts, dissolves and fades, so every curation stage has something to
find: cuts and gradual transitions for `cuts`, static shots for `motion`, text overlays for
`text`. The layout is seeded, so every run builds the same corpus.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from svdcli.video.synth import Shot, Transition, write_video

CAPTIONS = ["BREAKING NEWS", "SUBSCRIBE NOW", "LIVE 24/7", "SALE 50% OFF", "CHAPTER ONE"]


def _shot(rng: np.random.Generator, fps: float) -> Shot:
    kind = rng.choice(["pan", "pan", "pan", "static", "text"])
    frames = int(fps * rng.uniform(1.5, 3.0))
    seed = int(rng.integers(1_000_000))
    if kind == "static":
        return Shot(frames, seed)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.8, 4.0)
    velocity = (float(speed * np.cos(angle)), float(speed * np.sin(angle)))
    if kind == "text":
        return Shot(frames, seed, velocity, text=str(rng.choice(CAPTIONS)), text_area=float(rng.uniform(0.1, 0.2)))
    return Shot(frames, seed, velocity)


def _transition(rng: np.random.Generator) -> Transition:
    kind = rng.choice(["cut", "cut", "dissolve", "fade"])
    return Transition(str(kind), 0 if kind == "cut" else int(rng.integers(6, 12)))


def make_corpus(folder: str | Path, videos: int = 24, size: tuple[int, int] = (256, 160),
                fps: float = 24.0, seed: int = 0, progress: bool = True) -> list[Path]:
    """Write `videos` mp4 files (and truth.json with each video's shots and boundaries).

    Existing videos are kept, so an interrupted demo resumes here too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plans = []
    for i in range(videos):
        shots = [_shot(rng, fps) for _ in range(int(rng.integers(2, 5)))]
        transitions = [_transition(rng) for _ in shots[1:]]
        plans.append((folder / f"demo_{i:03d}.mp4", shots, transitions))
    truth = {}
    iterator = _progress(plans, progress)
    for path, shots, transitions in iterator:
        if path.exists() and path.stat().st_size > 0:
            continue
        tmp = path.with_suffix(".tmp.mp4")
        t = write_video(tmp, shots, transitions, size=size, fps=fps)
        tmp.replace(path)
        truth[path.name] = {"shots": [asdict(s) for s in shots], "transitions": [asdict(x) for x in transitions],
                            "boundaries": t.boundaries, "num_frames": t.num_frames, "fps": fps}
    truth_file = folder / "truth.json"
    if truth:
        old = json.loads(truth_file.read_text()) if truth_file.exists() else {}
        truth_file.write_text(json.dumps({**old, **truth}, indent=1))
    return [p for p, _, _ in plans]


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description="writing demo videos")
