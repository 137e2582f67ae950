"""Scoring detected shot boundaries against labelled ones: precision, recall, F1, straddling clips.

A labelled boundary (a cut at time t, or a gradual transition over [a, b]) is found when a
detected boundary lies within `tolerance` seconds of it (0.5 s; each detection matches at most
one label, closest pairs first). A clip straddles a labelled boundary when the boundary (a
transition's middle) lies inside it by more than `margin` seconds: the clip shows two shots,
the one failure a training set must never contain. `load_labels` reads the labelled footage
of tests/data/cut_labels.json (how those labels were made is written in that file).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Score:
    tp: int
    fp: int
    fn: int
    straddling: int = 0

    @property
    def precision(self) -> float:
        return self.tp / max(1, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self.tp / max(1, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                     self.straddling + other.straddling)


def match(found: list[float], truth: list[tuple[float, float]], tolerance: float = 0.5) -> Score:
    """Greedy one-to-one matching of detected times to labelled (start, end) spans."""
    gap = lambda f, span: max(span[0] - f, f - span[1], 0.0)  # noqa: E731
    pairs = sorted((gap(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)
                   if gap(f, t) <= tolerance)
    used_f, used_t = set(), set()
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    tp = len(used_t)
    return Score(tp, len(found) - tp, len(truth) - tp)


def straddling(clips: list[tuple[float, float]], truth: list[tuple[float, float]], margin: float = 0.1) -> int:
    """Clips (start, end) with a labelled boundary more than `margin` s inside them."""
    mids = [(a + b) / 2 for a, b in truth]
    return sum(any(s + margin < m < e - margin for m in mids) for s, e in clips)


@dataclass(frozen=True)
class LabelledClip:
    name: str
    path: Path | None  # None when the footage is not on this machine
    truth: list[tuple[float, float]]  # seconds: (t, t) for a cut, (a, b) for a gradual transition
    split: str | dict  # 'tune', 'heldout', or {'tune': [f0, f1], 'heldout': [f1, f2]} in frames
    fps: float
    slow: bool = False  # long footage, for the slow tests and the benchmark

    def parts(self) -> list[tuple[str, float, float]]:
        """(split, start s, end s) pieces of the footage."""
        if isinstance(self.split, str):
            return [(self.split, 0.0, float("inf"))]
        return [(k, a / self.fps, b / self.fps) for k, (a, b) in self.split.items()]


def locate(spec: str, shared: Path | None, fetched: Path | None = None) -> Path | None:
    """'package:NAME:REL' (a file inside an installed package), 'shared:REL' (shared/testdata),
    'sdist:REQ:MEMBER' / 'wheel:REQ:MEMBER' (a file of a package-index archive, once a benchmark
    has fetched it into `fetched`: see `fetched_path`)."""
    import importlib.util

    kind, _, rest = spec.partition(":")
    if kind in ("sdist", "wheel"):
        path = fetched_path(spec, fetched) if fetched is not None else None
    elif kind == "shared":
        path = shared / rest if shared is not None else None
    elif kind == "package":
        name, _, rel = rest.partition(":")
        found = importlib.util.find_spec(name)  # finds the folder without importing the package
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / rel
    else:
        return None
    return path.resolve() if path is not None and path.is_file() else None


def fetched_path(spec: str, fetched: Path) -> Path:
    """Where an 'sdist:REQ:MEMBER' or 'wheel:REQ:MEMBER' file lives once fetched."""
    _, req, member = spec.split(":", 2)
    return fetched / req.replace("==", "-") / member


def load_labels(labels: Path, shared: Path | None) -> list[LabelledClip]:
    data = json.loads(Path(labels).read_text())
    out = []
    for c in data["clips"]:
        fps = float(c["fps"])
        truth = [(k / fps, k / fps) for k in c["cuts"]] + [(a / fps, b / fps) for a, b in c["gradual"]]
        out.append(LabelledClip(c["name"], locate(c["locate"], shared), sorted(truth), c["split"], fps,
                                bool(c.get("slow", False))))
    return out


def score_clip(boundaries: list[float], clips: list[tuple[float, float]], truth: list[tuple[float, float]],
               lo: float = 0.0, hi: float = float("inf"), tolerance: float = 0.5) -> Score:
    """Score of detected boundary times and resulting clips against the labels in [lo, hi)."""
    inside = lambda t: lo <= t < hi  # noqa: E731
    truth = [s for s in truth if inside((s[0] + s[1]) / 2)]
    score = match([b for b in boundaries if inside(b)], truth, tolerance)
    clips = [(max(s, lo), min(e, hi)) for s, e in clips if e > lo and s < hi]
    return Score(score.tp, score.fp, score.fn, straddling(clips, truth))


@dataclass(frozen=True)
class SingleShots:
    """Real footage with stretches of one continuous shot (tests/data/cut_negatives.json)."""

    name: str
    path: Path | None
    split: str  # 'tune' or 'heldout'
    shots: list[tuple[float, float, str]]  # (start s, end s, motion class)
    transitions: list[tuple[float, float]]  # real shot changes, (t, t) for a cut
    ignore: list[tuple[float, float]]
    locate: str = ""


def load_single_shots(labels: Path, shared: Path | None, fetched: Path | None = None) -> list[SingleShots]:
    data = json.loads(Path(labels).read_text())
    return [SingleShots(v["name"], locate(v["locate"], shared, fetched), v["split"],
                        [(float(a), float(b), c) for a, b, c, *_ in v["shots"]],
                        [(float(a), float(b)) for a, b in v.get("transitions", [])],
                        [(float(a), float(b)) for a, b in v.get("ignore", [])], v["locate"])
            for v in data["videos"]]


def false_boundaries(boundaries: list[float], shots: list[tuple[float, float, str]]) -> dict[str, tuple[int, float]]:
    """{motion class: (boundaries inside its labelled single shots, seconds of those shots)}."""
    out: dict[str, tuple[int, float]] = {}
    for a, b, cls in shots:
        n, seconds = out.get(cls, (0, 0.0))
        out[cls] = (n + sum(a < t < b for t in boundaries), seconds + (b - a))
    return out


def transitions_found(boundaries: list[float], transitions: list[tuple[float, float]],
                      tolerance: float = 0.5) -> int:
    """Labelled transitions with a detected boundary within `tolerance` s of their span."""
    return sum(any(a - tolerance <= t <= b + tolerance for t in boundaries) for a, b in transitions)
