"""Cascaded cut detection over analysis frames: native rate, 15 fps and 8 fps from one decode.

The SVD paper runs a cut detector at three frame rates: a hard cut is one big change between
two frames, a dissolve or a fade is many small ones, invisible frame to frame but plain between
frames half a second apart. Every level samples the one decode by timestamp (a frame is used
when it is the first at or after the level's next sample time k / rate; frame-skip arithmetic
is wrong at 29.97 fps) and none ever suppresses a boundary: two cuts 0.2 s apart are two
boundaries, and the short piece between them is a short clip that `min_length` drops with a
reason (failure class 1 of the cut-detection issue: a suppressed cut is a clip that straddles it).

native (hard cuts): PySceneDetect's `AdaptiveDetector` score on our analysis frames (no second
    decode, no scene manager), computed in stacks of frames by `adaptive.py` with the library's
    arithmetic (its cuts and ratios, frame for frame, at a sixteenth of the cost of driving its
    `process_frame`). The score is the HSV content change of a frame over the mean change of
    the 2 frames on each side (adaptive ratio >= 3 and content >= 15): fast motion changes
    every frame a lot, a cut one frame far more than its neighbours. On the labelled fast-cut
    music video it scores F1 0.996 against 0.966 for `ContentDetector` at its fixed threshold
    of 27 (docs/benchmarks.md).
slow levels (gradual transitions): a span test between samples `span` seconds apart,

        ratio(t) = d(t - s, t + s) / max(d(t - 3s, t - s), d(t + s, t + 3s), floor)

    with d the mean absolute Y/U/V difference of two frames (structure, not colour
    statistics, so a dissolve between two shots of one palette shows). Across a transition
    the two sides differ; within each side, over the same time gap, they do not, unless
    the camera or the subject moves, which raises the denominator as much as the numerator. A
    sample is a candidate when ratio >= the level's threshold and d(t - s, t + s) >= `min_change`;
    consecutive candidates form one event, and the event's transition is where the change
    above the local baseline accumulates (5% to 95% of it): one frame pair for a hard cut, the
    dissolve's frames for a dissolve. Those frames belong to no clip.

Every level's candidates then pass the transition gate (`transition_gate.py`): a hard cut must
stay a change once camera motion is compensated; a gradual one must have a transition's
structure (A before, B or black after, the middle a blend of the two). The size of a change
proposes, its shape decides: pans, tilts, subjects leaving the frame, overlays fading in over an
unchanged scene and lighting changes are rejected, and `Cascade.explain()` lists every candidate
with the verdict and its reason.

Levels are merged by time: boundaries closer than `merge_tolerance` or whose transitions overlap
are one, spanning all their transitions and keeping every level's name and score. The optional
learned level (TransNetV2) lives in `transnet.py` and merges the same way. Nothing here knows
about files.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from svdcli.curate.scorers.adaptive import AdaptiveRatio
from svdcli.curate.scorers.transition_gate import GateConfig, Verdict, judge_gradual, judge_hard

NATIVE = "native"


@dataclass(frozen=True)
class LevelSpec:
    """One detector level: `rate` in fps (None = every decoded frame) and its threshold.

    native: the adaptive ratio of PySceneDetect's AdaptiveDetector (default 3.0);
    slow levels: the span ratio (default 3.0) over `span` seconds.
    """

    name: str
    rate: float | None
    threshold: float
    span: float = 0.5  # seconds; slow levels only


@dataclass(frozen=True)
class CascadeConfig:
    levels: tuple[LevelSpec, ...]
    min_content: float = 15.0  # native: least HSV content change of a cut (AdaptiveDetector min_content_val)
    min_change: float = 8.0  # slow levels: least aligned RMS change (grey levels) across a transition
    merge_tolerance: float = 0.5  # seconds: boundaries of different levels closer than this are one
    gate: GateConfig | None = field(default_factory=GateConfig)  # None: keep every candidate (the old cascade)


def default_threshold(rate: float | None) -> float:
    """Adaptive ratio 3 at the native rate (PySceneDetect's default), span ratio 3 at low rates."""
    return 3.0


def default_span(rate: float | None) -> float:
    """Seconds on each side of a slow level's span test: 0.4 s at 15 fps, 0.75 s at 8 fps, so
    the two levels see transitions up to ~0.8 s and ~1.5 s long."""
    if rate is None:
        return 0.0
    return 0.4 if rate >= 12 else 0.75


def level_name(rate: float | None) -> str:
    return NATIVE if rate is None else f"{rate:g}fps"


def default_levels(rates: tuple[float | None, ...] = (None, 15.0, 8.0)) -> tuple[LevelSpec, ...]:
    return tuple(LevelSpec(level_name(r), r, default_threshold(r), default_span(r)) for r in rates)


SPAN_SIZE = (48, 27)  # (w, h) of the span test's thumbnails
SHIFT = 6  # pixels of that grid: the largest camera move between two compared samples
FADE_CONTEXT = 1.0  # seconds around a located transition in which a black sample makes it a fade


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """(27, 48, 3) uint8 Y/U/V thumbnail of an (h, w, 3) analysis frame, for `aligned_distance`
    (3.9 KB a sample: a level at 15 fps keeps ~210 MB per hour of video)."""
    import cv2

    return cv2.resize(frame, SPAN_SIZE, interpolation=cv2.INTER_AREA)


def aligned_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Motion-compensated distance of two thumbnails: the RMS Y/U/V difference between b's centre
    and the best-matching window of a, over shifts of up to SHIFT pixels. A pan or a tilt
    costs almost nothing (the picture moved, it did not change); a different shot, however
    alike in colour, costs as much as without the search."""
    import cv2

    h, w = a.shape[:2]
    centre = np.ascontiguousarray(b[SHIFT:h - SHIFT, SHIFT:w - SHIFT])
    best = float(cv2.matchTemplate(a, centre, cv2.TM_SQDIFF).min())  # uint8 in, float sums out
    return float(np.sqrt(max(best, 0.0) / centre.size))


def shot_edges(a: int, b: int, is_old, is_new) -> tuple[int, int]:
    """(last old sample, first new sample) of a transition between samples a and b: the last
    sample close to a (`is_old`) before the first one close to b (`is_new`), a when there is
    none; then the first sample close to b after it, b when there is none. Samples are compared
    only until each answer is known, in the order that finds it first: on a cut, ~half of the
    2 (b - a + 1) comparisons that testing every sample both ways takes, with the same answers."""
    first = next((j for j in range(a, b + 1) if is_new(j)), b + 1)
    last_old = next((j for j in range(first - 1, a - 1, -1) if is_old(j)), a)
    if last_old < first <= b:
        return last_old, first
    return last_old, next((j for j in range(last_old + 1, b + 1) if is_new(j)), b)


@dataclass
class Boundary:
    """A shot change: the old shot's last clean frame and the new shot's first clean frame.

    For a hard cut these are adjacent frames; for a gradual transition the frames in between
    belong to the transition. `time` is where the change peaks; `scores` maps each level (or
    detector) that found it to its score there.
    """

    time: float
    last_old: float
    first_new: float
    scores: dict[str, float] = field(default_factory=dict)
    gradual: bool = False  # the change spans several samples of the level that found it

    @property
    def levels(self) -> list[str]:
        return list(self.scores)


@dataclass
class Candidate:
    """A boundary one level proposed, and what the transition gate made of it (for --explain)."""

    level: str
    time: float
    last_old: float
    first_new: float
    score: float
    kept: bool
    reason: str
    measures: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


class _Sampler:
    """Picks frames by timestamp on a level's own grid, so jitter never accumulates."""

    def __init__(self, rate: float | None):
        self.rate, self._next = rate, 0.0

    def wants(self, t: float) -> bool:
        if self.rate is None:
            return True
        if t < self._next - 1e-6:
            return False
        self._next = (math.floor(t * self.rate + 1e-6) + 1) / self.rate
        return True


class NativeLevel:
    """Every frame through PySceneDetect's AdaptiveDetector score (`adaptive.py`), each cut it
    names through the gate; also keeps the per-frame changes (`frame_scores`) that slow levels
    use to put a hard cut on its exact frame."""

    RECENT = 48  # frames kept for the gate: a cut is named 2 frames after it, at the end of a batch

    def __init__(self, spec: LevelSpec | None, min_content: float, gate: GateConfig | None = None):
        self.spec, self.gate = spec, gate
        self.log: list[Candidate] = []  # every cut the detector named, and the gate's verdict
        self._recent: deque = deque(maxlen=self.RECENT)  # (index, analysis frame)
        # no minimum scene length: never suppress a boundary (failure class 1)
        self.detector = AdaptiveRatio(spec.threshold if spec else 3.0, min_content)
        self.times: list[float] = []
        self.found: list[tuple[int, float]] = []  # (frame k starting a new shot, adaptive ratio)

    @property
    def frame_scores(self) -> list[float]:
        """Content change from frame k-1 to k (0 for k=0): the detector's HSV score."""
        return self.detector.scores

    def feed_many(self, times: list[float], frames: np.ndarray) -> None:
        """(n, h, w, 3) Y/U/V analysis frames shown at `times`: through the detector, the cuts it
        names through the gate."""
        import cv2

        n, h, w, _ = frames.shape
        for i in range(n):
            self._recent.append((len(self.times), frames[i]))
            self.times.append(times[i])
        # pixel-wise conversions: one call for the whole stack
        hsv = cv2.cvtColor(cv2.cvtColor(frames.reshape(n * h, w, 3), cv2.COLOR_YUV2BGR), cv2.COLOR_BGR2HSV)
        for k, ratio in self.detector.feed_many(hsv.reshape(n, h, w, 3)):
            if self.spec is not None:
                self._judge(k, round(ratio, 3))

    def _judge(self, k: int, ratio: float) -> None:
        """Keep cut k (frame k starts the new shot) unless camera motion explains it."""
        frames = dict(self._recent)
        verdict = Verdict(True, "hard cut (no gate)")
        if self.gate is not None and k - 1 in frames and k in frames:
            verdict = judge_hard(thumbnail(frames[k - 1]), thumbnail(frames[k]), self.gate)
        self.log.append(Candidate(self.spec.name, self.times[k], self.times[k - 1], self.times[k], ratio,
                                  verdict.kept, verdict.reason, verdict.measures))
        if verdict.kept:
            self.found.append((k, ratio))

    def judged_until(self) -> float:
        """The time up to which every cut is named (the detector names one `window` frames after it)."""
        window = self.detector.window
        return self.times[-1 - window] if len(self.times) > window else float("-inf")

    def boundaries(self, since: float = float("-inf")) -> list[Boundary]:
        """Cut k: frame k starts the new shot; scored by the detector's adaptive ratio there. Those
        after `since` only."""
        if self.spec is None:
            return []
        found = self.found[bisect.bisect_right(self.found, since, key=lambda f: self.times[f[0]]):]
        return [Boundary(self.times[k], self.times[k - 1], self.times[k], {self.spec.name: ratio}) for k, ratio in found]

    def cut_within(self, a: float, b: float) -> tuple[float, float] | None:
        """(last old, first new) frame times of the native cut with a < first new <= b, if one."""
        for k, _ in self.found:
            if a < self.times[k] <= b + 1e-9:
                return self.times[k - 1], self.times[k]
        return None

    def is_adjacent(self, a: float, b: float) -> bool:
        """True when frames at times a and b follow each other (a hard cut between them)."""
        i = int(np.searchsorted(self.times, a + 1e-6))
        return i < len(self.times) and abs(self.times[i] - b) < 1e-6


class SlowLevel:
    """One low-rate level: keeps a thumbnail per sample, then runs the span test (module docstring)."""

    def __init__(self, spec: LevelSpec, min_change: float, gate: GateConfig | None = None):
        self.spec, self.min_change, self.gate = spec, min_change, gate
        self.log: list[Candidate] = []  # the last `boundaries` call's candidates and verdicts
        self.sampler = _Sampler(spec.rate)
        self.times: list[float] = []
        self.thumbs: list[np.ndarray] = []
        self.span = max(1, round(spec.span * spec.rate))  # samples on each side of the span test
        self._cross: list[float] = []  # d(k - s, k + s) of the samples whose k + s has arrived
        self._ratio: list[float] = []  # the span ratio of the samples whose d(k + 2s) has arrived (`settled`)
        self._within: list[float] = []  # its denominator before the floor
        self._transitions: dict[tuple[int, int, float], tuple[float, float]] = {}  # `_transition` of settled events
        self._verdicts: dict[tuple[float, float, bool], bool] = {}

    def feed_many(self, times: list[float], frames: np.ndarray) -> None:
        """(n, h, w, 3) analysis frames shown at `times`: a thumbnail of each one the level samples,
        and the span distances it completes (computed while the decoder runs, not at the end)."""
        for t, frame in zip(times, frames):
            if self.sampler.wants(t):
                self.times.append(t)
                self.thumbs.append(thumbnail(frame))
        s, k = self.span, len(self._cross)
        while k + s < len(self.thumbs):
            self._cross.append(aligned_distance(self.thumbs[max(k - s, 0)], self.thumbs[k + s]))
            k += 1

    def suspects(self, since: int = 0) -> tuple[list[tuple[float, float]], int, float]:
        """Where this level may yet put a boundary, from the span distances computed so far.

        Returns the (first, last) sample times around each sample k >= `since` that passes the
        part of the span test already known (d(k - s, k + s) >= min_change and >= threshold x
        the same gap's change before it: the change after it can only lower the ratio), the next
        `since`, and the time before which the list is complete (a later sample may still start
        a span there). A boundary this level finds starts its new shot inside such a span; the
        last s samples are measured only at the end, so near the end nothing is complete.
        """
        s = self.span
        _, passing, measured = self._suspected(since)
        spans = [(self.times[max(k - s, 0)], self.times[k + s]) for k in passing]
        complete = self.times[measured - s] if measured >= s else 0.0
        return spans, measured, complete

    def boundaries(self, native: NativeLevel) -> list[Boundary]:
        s = self.span
        n = len(self.thumbs)
        self.log = []
        if n < 2 * s + 1:
            return []
        # cross[k] = d(k - s, k + s); the same gap entirely before k is cross[k - 2s], after it cross[k + 2s];
        # the last s samples compare with the last one
        tail = [aligned_distance(self.thumbs[max(k - s, 0)], self.thumbs[min(k + s, n - 1)])
                for k in range(len(self._cross), n)]
        cross = self._cross + tail
        within, ratio = zip(*(self._span_test(cross, k) for k in range(n)))
        events = self._events(cross, ratio, range(n))
        return [b for b in self._located(events, ratio, within, native) if self._judge(b, native, self.log)]

    def _fade_samples(self) -> int:
        """Samples on each side of a located transition the gate looks at for black (FADE_CONTEXT)."""
        return max(1, round(FADE_CONTEXT * self.spec.rate))

    def _span_test(self, cross: list[float], k: int) -> tuple[float, float]:
        """(the change over the same gap before or after sample k, whichever is larger; k's span
        ratio), with no change counted beyond either end of `cross`."""
        s = self.span
        within = max(cross[k - 2 * s] if k >= 2 * s else 0.0, cross[k + 2 * s] if k + 2 * s < len(cross) else 0.0)
        return within, cross[k] / max(within, self.min_change / 4)  # compression noise is no baseline

    def _events(self, cross: list[float], ratio, ks) -> list[list[int]]:
        """The candidates among samples `ks` (ratio >= threshold, change >= min_change), consecutive
        ones joined into one event."""
        events: list[list[int]] = []
        for k in ks:
            if ratio[k] >= self.spec.threshold and cross[k] >= self.min_change:
                if events and k == events[-1][-1] + 1:
                    events[-1].append(k)
                else:
                    events.append([k])
        return events

    def settled(self, native: NativeLevel, since: float) -> tuple[list[Boundary], float]:
        """What `boundaries` will report from `since` on, as far as the samples so far decide it.

        Returns the boundaries whose new shot starts after `since` and before the time returned,
        up to which the list is final: every sample there has its whole span test (the change
        after it included), its event is closed, its transition located (the native level has
        judged those frames) and gated with the samples the gate reads. The arithmetic is
        `boundaries`' own (the same ratios, events, locations and verdicts), only the end of
        the video, where `boundaries` compares the last samples with the last one, is never
        settled. Used while decoding to learn where clips start before the pass is over.
        """
        s, cross = self.span, self._cross
        for k in range(len(self._ratio), len(cross) - 2 * s):  # d(k + 2s) is in: k's ratio is final
            within, ratio = self._span_test(cross, k)
            self._within.append(within)
            self._ratio.append(ratio)
        known = len(self._ratio)
        if known == 0:
            return [], float("-inf")
        first = max(0, bisect.bisect_left(self.times, since - 2 * self.spec.span) - 4 * s)
        events = self._events(cross, self._ratio, range(first, known))
        if events and events[0][0] == first:
            events.pop(0)  # it may have begun before the window
        # the next event starts at the first later sample that passes the part of the test known
        # (`suspects`), and locates its transition from s samples before it on
        nxt, _, _ = self._suspected(known)
        until = self.times[max(nxt - s - 1, 0)]
        fade = self._fade_samples()
        ready = []
        for ev in events:
            end = ev[-1] + s
            if (ev[-1] == known - 1 and nxt == known) or end + 1 + fade >= len(self.thumbs) or \
                    self.times[end] + 1.0 / self.spec.rate > native.judged_until():
                until = min(until, self.times[max(ev[0] - s, 0)])
                break
            ready.append(ev)
        found = [b for b in self._located(ready, self._ratio, self._within, native, self._transitions)
                 if since < b.first_new <= until]
        return [b for b in found if self._verdict(b, native)], until

    def _suspected(self, since: int) -> tuple[int, list[int], int]:
        """(the first sample from `since` on that passes the part of the span test known, or the
        first not measured yet; every such sample; the samples measured)."""
        s, cross = self.span, self._cross
        floor, threshold = self.min_change / 4, self.spec.threshold * (1 - 1e-9)  # float slack: never stricter
        passing = [k for k in range(since, len(cross)) if cross[k] >= self.min_change * (1 - 1e-9)
                   and cross[k] >= threshold * max(cross[k - 2 * s] if k >= 2 * s else 0.0, floor)]
        return (passing[0] if passing else len(cross)), passing, len(cross)

    def _verdict(self, b: Boundary, native: NativeLevel) -> bool:
        """The gate's verdict on a settled boundary (kept: `settled` asks again as frames arrive)."""
        key = (b.last_old, b.first_new, b.gradual)
        if key not in self._verdicts:
            self._verdicts[key] = self._judge(b, native, [])
        return self._verdicts[key]

    def _located(self, events: list[list[int]], ratio, within, native: NativeLevel,
                 known: dict | None = None) -> list[Boundary]:
        """Each event's transition located on the frames (`_transition`, or from `known`, where
        the located transitions are kept), events located on one transition joined, hard cuts
        snapped to the native level's frame."""
        s = self.span
        out: list[Boundary] = []
        for ev in events:
            peak = max(ev, key=lambda k: ratio[k])
            where = (ev[0] - s, ev[-1] + s, float(within[peak]))
            if known is None or where not in known:
                located = self._transition(*where, native)
                if known is None:
                    last_old, first_new = located
                else:
                    last_old, first_new = known[where] = located
            else:
                last_old, first_new = known[where]
            score = round(float(ratio[peak]), 3)
            if out and last_old < out[-1].first_new:  # two events located on one transition
                prev = out[-1]
                prev.first_new = max(prev.first_new, first_new)
                prev.scores[self.spec.name] = max(prev.scores[self.spec.name], score)
                prev.gradual = True
                continue
            # where the change is: the new shot's first frame after a hard cut, else the middle
            steps = int(np.searchsorted(self.times, first_new - 1e-6) - np.searchsorted(self.times, last_old + 1e-6))
            # a change over a few samples with a native cut in it, or one that starts at a native
            # cut, is that cut: the motion after it spread the change (a fade ending in a jump
            # to black is still a fade)
            step = 1.5 / self.spec.rate
            snapped = native.cut_within(last_old, first_new if steps <= 3 else min(first_new, last_old + step))
            if snapped:
                last_old, first_new = snapped
            cut = native.is_adjacent(last_old, first_new)
            at = first_new if cut else (last_old + first_new) / 2
            out.append(Boundary(at, last_old, first_new, {self.spec.name: score}, gradual=not cut and steps >= 1))
        return out

    def _judge(self, b: Boundary, native: NativeLevel, log: list[Candidate]) -> bool:
        """The transition gate on one located boundary; the verdict goes to `log`."""
        if self.gate is None:
            verdict = Verdict(True, "no gate")
        elif native.is_adjacent(b.last_old, b.first_new):
            if native.cut_within(b.last_old, b.first_new):
                verdict = Verdict(True, "the native level's hard cut")
            else:  # a one-frame change the native level did not take: the samples around it
                i = int(np.searchsorted(self.times, b.last_old + 1e-6)) - 1
                verdict = judge_hard(self.thumbs[max(i, 0)], self.thumbs[min(i + 1, len(self.thumbs) - 1)], self.gate)
        else:
            i = max(int(np.searchsorted(self.times, b.last_old + 1e-6)) - 1, 0)
            j = min(int(np.searchsorted(self.times, b.first_new - 1e-6)), len(self.thumbs) - 1)
            s = self._fade_samples()
            verdict = judge_gradual(self.thumbs[i], self.thumbs[i + 1:j], self.thumbs[j], self.gate,
                                    self.thumbs[max(i - s, 0):i] + self.thumbs[j + 1:j + 1 + s])
        log.append(Candidate(self.spec.name, b.time, b.last_old, b.first_new, b.scores[self.spec.name],
                             verdict.kept, verdict.reason, verdict.measures))
        return verdict.kept

    def _transition(self, a: int, b: int, level: float, native: NativeLevel) -> tuple[float, float]:
        """(last clean old frame, first clean new frame) between samples a and b.

        The old shot lasts while a sample is still close to sample a, the new one starts once a
        sample is close to sample b ("close": within the shot's own change `level` plus 15% of
        the change across); a hard cut between two samples is then put on its exact native
        frame, where one frame pair carries most (75%) of the per-frame change.
        """
        n = len(self.thumbs)
        a, b = max(a, 0), min(b, n - 1)
        thumbs = self.thumbs
        across = aligned_distance(thumbs[a], thumbs[b])
        close = level + 0.15 * max(across - level, 0.0)
        last_old, first_new = shot_edges(a, b, lambda j: aligned_distance(thumbs[a], thumbs[j]) <= close,
                                         lambda j: aligned_distance(thumbs[j], thumbs[b]) <= close)
        t0, t1 = self.times[last_old], self.times[first_new]
        ft, fs = np.asarray(native.times), np.asarray(native.frame_scores)
        lo, hi = np.searchsorted(ft, [t0, t1], side="right")  # frames after t0 up to t1
        if hi - lo >= 2:
            k = lo + int(np.argmax(fs[lo:hi]))
            if fs[k] >= 0.75 * fs[lo:hi].sum():
                return float(ft[k - 1]), float(ft[k])
        return t0, t1


def merge_boundaries(per_level: list[list[Boundary]], tolerance: float) -> list[Boundary]:
    """Union of boundaries over levels (finest first): nothing is dropped.

    A coarser level's boundary joins the nearest finer one it is close to (within `tolerance`
    or overlapping), adding its score. A gradual one widens that boundary to its own transition
    (a fade the native level saw as one jump), unless another boundary lies inside it; a hard
    cut seen between two coarse samples keeps the finer level's exact frames.
    Boundaries of one level never merge: two cuts 0.3 s apart stay two.
    """
    merged: list[Boundary] = []
    for found in per_level:
        fresh = []
        for b in found:
            near = [m for m in merged if not set(b.scores) & set(m.scores)
                    and (abs(m.time - b.time) <= tolerance or (b.last_old < m.first_new and m.last_old < b.first_new))]
            if not near:
                fresh.append(Boundary(b.time, b.last_old, b.first_new, dict(b.scores), b.gradual))
                continue
            m = min(near, key=lambda m: abs(m.time - b.time))
            inside = [o for o in merged if o is not m and b.last_old < o.time <= b.first_new]
            if b.gradual and not inside:  # a gradual transition's frames belong to no clip
                m.last_old, m.first_new = min(m.last_old, b.last_old), max(m.first_new, b.first_new)
                m.gradual = True
            m.scores.update({k: v for k, v in b.scores.items() if k not in m.scores})
        merged = sorted(merged + fresh, key=lambda b: b.time)
    return merged


class Cascade:
    """Every level fed from one decode (plus optional extra detectors); the merged result."""

    BATCH = 32  # frames handed to the levels at once

    def __init__(self, cfg: CascadeConfig, extra=()):
        self.cfg = cfg
        native = [s for s in cfg.levels if s.rate is None]
        self.native = NativeLevel(native[0] if native else None, cfg.min_content, cfg.gate)
        self.slow = [SlowLevel(s, cfg.min_change, cfg.gate) for s in cfg.levels if s.rate is not None]
        self._learned: list[Candidate] = []
        self._pending: list[tuple[float, np.ndarray]] = []  # frames fed, not yet given to the levels
        self.extra = list(extra)  # e.g. the TransNetV2 level: feed(t, frame) + boundaries()

    def feed(self, t: float, frame: np.ndarray) -> None:
        """One (3, h, w) analysis frame at `t`; the levels get them in stacks of BATCH, as
        (n, h, w, 3), so the per-frame work is a few array operations per stack."""
        for level in self.extra:
            level.feed(t, frame)
        self._pending.append((t, frame))
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        times = [t for t, _ in self._pending]
        frames = np.ascontiguousarray(np.stack([f for _, f in self._pending]).transpose(0, 2, 3, 1))
        self._pending = []
        self.native.feed_many(times, frames)
        for level in self.slow:
            level.feed_many(times, frames)

    def _slow_finest_first(self) -> list[SlowLevel]:
        """The slow levels in the order their boundaries merge: the higher rate first."""
        return sorted(self.slow, key=lambda lv: -lv.spec.rate)

    def consumers(self) -> list[Cascade]:
        return [self]

    def boundaries(self) -> list[Boundary]:
        self._flush()
        per_level = [self.native.boundaries()] + [lv.boundaries(self.native) for lv in self._slow_finest_first()]
        self._learned = []
        for lv in self.extra:
            found = lv.boundaries()
            self._learned += [Candidate(name, b.time, b.last_old, b.first_new, score, True, "learned detector")
                              for b in found for name, score in b.scores.items()]
            per_level.append(found)
        return merge_boundaries(per_level, self.cfg.merge_tolerance)

    def settled(self, since: float) -> tuple[list[Boundary], float]:
        """The merged boundaries `boundaries` will report whose new shot starts after `since`, as
        far as the frames decoded so far decide them, and the time up to which that list is final
        (`SlowLevel.settled`, less the merge tolerance: a boundary nearer than that to what is
        not settled may still merge with it). Without the extra detectors, which decide only at
        the end."""
        until = self.native.judged_until()
        per_level = [self.native.boundaries(since - self.cfg.merge_tolerance)]
        for level in self._slow_finest_first():
            found, level_until = level.settled(self.native, since - self.cfg.merge_tolerance)
            per_level.append(found)
            until = min(until, level_until)
        until -= self.cfg.merge_tolerance
        merged = merge_boundaries(per_level, self.cfg.merge_tolerance)
        return [b for b in merged if since < b.first_new <= until], until

    def explain(self) -> list[dict]:
        """Every candidate boundary of the last `boundaries()` call in time order: level, score,
        kept or not, and why."""
        log = self.native.log + [c for lv in self.slow for c in lv.log] + self._learned
        return [c.as_dict() for c in sorted(log, key=lambda c: (c.time, c.level))]

    def frame_after(self, t: float) -> float | None:
        """Time of the first decoded frame after `t` (None past the last frame)."""
        self._flush()
        times = self.native.times
        i = int(np.searchsorted(times, t + 1e-6))
        return times[i] if i < len(times) else None
