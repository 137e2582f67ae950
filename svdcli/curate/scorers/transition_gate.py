"""Is a candidate boundary a shot change? The structure of a transition, measured on thumbnails.

The cascade's levels propose boundaries from the size of a change; this module decides from its
shape. Every measure works on the (27, 48, 3) Y/U/V thumbnails of `cascade.thumbnail` and
compensates camera motion by a search over shifts of up to `shift` pixels (the centre of one
frame against every window of the other, as `cascade.aligned_distance` does).

Gradual candidates (a change spread over several samples, no hard cut in it) are kept only when
all of these hold, with A the old shot's last clean sample, B the new shot's first and M the
samples between (`judge_gradual`):
  1. content A before and content B, or black, after. A fade is recognised by a black sample
     at either end, between them or within `cascade.FADE_CONTEXT` of them (a level may locate only the
     end of a long fade-in). Otherwise A and B must be different pictures: their
     motion-compensated correlation of Y below `same_scene` (a lighting change, a pan within
     the search or a slow zoom keep the picture and so its correlation), and the change must
     cover at least `min_spread` of the grid cells that show anything (a title or logo fading
     in over an unchanged scene, or an object leaving the frame, changes a few cells);
  2. the middle frames are a blend of the two ends: for each m in M, with A and B each aligned
     to m (by correlation, so a dimmed frame aligns too), the non-negative least-squares fit
     m - K ~ b (A - K) + c (B - K), K = black (b + c < 1 is a dip through black), leaves a
     residual r_blend; the better single end leaves r_end = min(|m - A|, |m - B|). Over the
     transition's middle (the samples whose r_end is at least `MIDDLE` of its largest), the
     blend gain sum(r_end) / sum(r_blend) must reach `min_blend_gain`: a dissolve or a fade is
     explained by its ends much better than by either end; a pan, a zoom or a moving subject is
     not (its middle is neither end nor a mix of them);
  3. a dissolve progresses: the blend's share of B, c / (b + c), rises with time (rank
     correlation >= `min_progress_order` over 3 or more samples).
Hard cuts (`judge_hard`: two adjacent frames) are kept unless camera motion explains them: the
motion-compensated distance must keep at least `min_unexplained` of the uncompensated one (a
camera step, as in a pan with duplicated frames, shrinks to little once aligned; a cut does not).

Each verdict carries its measures and a one-line reason for `--explain`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the transition gate (chosen on the 'tune' footage, docs/benchmarks.md)."""

    same_scene: float = 0.9  # motion-compensated Y correlation at or above which A and B are one picture
    min_spread: float = 0.5  # least fraction of the picture's cells a transition changes
    min_blend_gain: float = 1.5  # least sum(r_end) / sum(r_blend) over a gradual transition's middle
    min_progress_order: float = 0.5  # least rank correlation of the blend's progress with time (dissolves)
    min_unexplained: float = 0.5  # hard cut: least aligned / unaligned distance of the frame pair
    cell_change: float = 10.0  # grey levels (mean |dY| + |dU| + |dV|) that mark a grid cell as changed
    shift: int = 6  # pixels of the thumbnail grid searched for camera motion


@dataclass
class Verdict:
    kept: bool
    reason: str
    measures: dict[str, float] = field(default_factory=dict)


GRID = (3, 6)  # rows, columns of cells for the spread test (on the aligned centre, 15 x 36)
MIDDLE = 0.7  # middle frames of a transition: r_end at least this share of its largest
DARK = 40.0  # mean Y below which, with little texture, a frame counts as black
FLAT = 12.0  # standard deviation of Y below which a frame counts as flat
BLACK = np.array([16.0, 128.0, 128.0], np.float32)  # Y/U/V of black (video range)


def _centre(frame: np.ndarray, shift: int) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[shift:h - shift, shift:w - shift].astype(np.float32)


def aligned_window(ref: np.ndarray, target: np.ndarray, shift: int, normed: bool = False) -> np.ndarray:
    """The window of `ref` (same size as target's centre) that best matches target's centre;
    `normed`: by correlation, blind to brightness and contrast (a frame of a fade)."""
    import cv2

    centre = _centre(target, shift)
    if normed:
        scores = -cv2.matchTemplate(ref[..., 0].astype(np.float32), centre[..., 0], cv2.TM_CCOEFF_NORMED)
    else:
        scores = cv2.matchTemplate(ref.astype(np.float32), centre, cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(np.argmin(scores)), scores.shape)
    ch, cw = centre.shape[:2]
    return ref[y:y + ch, x:x + cw].astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def is_black(frame: np.ndarray) -> bool:
    y = frame[..., 0].astype(np.float32)
    return float(y.mean()) < DARK and float(y.std()) < FLAT


def scene_correlation(a: np.ndarray, b: np.ndarray, shift: int) -> float:
    """Correlation of the Y planes of b's centre and its best-matching window of a (1 = one picture)."""
    x = _centre(b, shift)[..., 0].ravel()
    y = aligned_window(a, b, shift)[..., 0].ravel()
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 1e-6 else 1.0


def change_spread(a: np.ndarray, b: np.ndarray, cfg: GateConfig) -> float:
    """Fraction of the grid cells showing anything (in a or b) whose content changed from a to b."""
    bc, aw = _centre(b, cfg.shift), aligned_window(a, b, cfg.shift)
    rows, cols = GRID
    h, w = bc.shape[:2]
    changed = shown = 0
    for i in range(rows):
        for j in range(cols):
            sl = (slice(i * h // rows, (i + 1) * h // rows), slice(j * w // cols, (j + 1) * w // cols))
            ca, cb = aw[sl], bc[sl]
            if max(ca[..., 0].mean(), cb[..., 0].mean()) < DARK / 2 and max(ca[..., 0].std(), cb[..., 0].std()) < FLAT / 2:
                continue  # black in both (letterbox bars, a dark corner): says nothing
            shown += 1
            changed += float(np.abs(ca - cb).reshape(-1, 3).mean(axis=0).sum()) >= cfg.cell_change
    return changed / shown if shown else 0.0


def _fit(mc: np.ndarray, aw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """Non-negative least squares (b, c) of mc ~ b*aw + c*bw (all relative to black)."""
    basis = np.stack([aw.ravel(), bw.ravel()], axis=1)  # (P, 2)
    target = mc.ravel()
    coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
    if coef.min() >= 0:
        return coef
    single = [max(0.0, float(basis[:, i] @ target) / max(float(basis[:, i] @ basis[:, i]), 1e-6)) for i in (0, 1)]
    errs = [_rms(target - single[i] * basis[:, i]) for i in (0, 1)]
    return np.array([single[0], 0.0]) if errs[0] <= errs[1] else np.array([0.0, single[1]])


def blend_fit(a: np.ndarray, m: np.ndarray, b: np.ndarray, shift: int) -> tuple[float, float, float]:
    """(r_blend, r_end, progress) of one middle frame m between ends a and b (module docstring, 3).

    Each end is aligned to m, the blend fitted, then each end re-aligned to what the blend leaves
    for it (m less the other end's share) and the blend fitted again: an end aligned to a mix is
    pulled off by the other picture. progress = c / (b + c), how far from a towards b."""
    mc = _centre(m, shift)
    aw, bw = aligned_window(a, m, shift, normed=True), aligned_window(b, m, shift, normed=True)
    r_end = min(_rms(mc - aw), _rms(mc - bw))
    coef = _fit(mc - BLACK, aw - BLACK, bw - BLACK)  # a fade scales the distance from black
    if coef.min() > 0.05:
        h, w = m.shape[:2]
        for end, other, k, o in ((a, bw, 0, 1), (b, aw, 1, 0)):
            rest = np.full(m.shape, BLACK, np.float32)
            rest[shift:h - shift, shift:w - shift] = BLACK + (mc - BLACK - coef[o] * (other - BLACK)) / coef[k]
            if k == 0:
                aw = aligned_window(end, rest, shift, normed=True)
            else:
                bw = aligned_window(end, rest, shift, normed=True)
        coef = _fit(mc - BLACK, aw - BLACK, bw - BLACK)
    r_blend = _rms(mc - BLACK - coef[0] * (aw - BLACK) - coef[1] * (bw - BLACK))
    total = float(coef.sum())
    return r_blend, r_end, float(coef[1] / total) if total > 1e-6 else 0.5


def _rank_correlation(values: list[float]) -> float:
    """Spearman correlation of `values` with their order (1: steadily increasing)."""
    if len(values) < 2:
        return 1.0
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)
    order = np.arange(len(values), dtype=np.float64)
    ranks -= ranks.mean()
    order -= order.mean()
    return float((ranks * order).sum() / np.sqrt((ranks * ranks).sum() * (order * order).sum()))


def judge_gradual(a: np.ndarray, mids: list[np.ndarray], b: np.ndarray, cfg: GateConfig,
                  nearby: list[np.ndarray] = ()) -> Verdict:
    """Keep a gradual candidate only if it has a transition's structure (module docstring).

    `nearby`: samples around the located transition; a black one among them makes it part of a
    fade (the level may locate only the end of a long fade-in, from a dim frame on)."""
    fade = any(is_black(f) for f in (a, b, *mids, *nearby))
    measures: dict[str, float] = {"fade": float(fade)}
    if not fade:
        corr = scene_correlation(a, b, cfg.shift)
        measures["correlation"] = round(corr, 3)
        if corr >= cfg.same_scene:
            return Verdict(False, f"same picture before and after (correlation {corr:.2f} >= {cfg.same_scene:g} "
                                  "after motion compensation): a lighting change or camera motion", measures)
        spread = change_spread(a, b, cfg)
        measures["spread"] = round(spread, 3)
        if spread < cfg.min_spread:
            return Verdict(False, f"local change: {spread:.0%} of the picture changed (< {cfg.min_spread:.0%}): "
                                  "an overlay or an object entering or leaving", measures)
    if not mids:
        return Verdict(True, "change between two adjacent samples of the level: nothing to blend", measures)
    fits = [blend_fit(a, m, b, cfg.shift) for m in mids]
    top = max(f[1] for f in fits)
    middle = [f for f in fits if f[1] >= MIDDLE * top]  # the transition's middle, where the ends differ most
    gain = sum(f[1] for f in middle) / max(sum(f[0] for f in middle), 1e-3)
    order = _rank_correlation([f[2] for f in fits])
    measures.update(blend_gain=round(gain, 3), progress_order=round(order, 3))
    if gain < cfg.min_blend_gain:
        return Verdict(False, f"middle frames are no blend of the ends (blend gain {gain:.2f} < {cfg.min_blend_gain:g}): "
                              "motion within one shot", measures)
    if not fade and len(fits) >= 3 and order < cfg.min_progress_order:
        return Verdict(False, f"the blend does not progress from one end to the other (rank correlation {order:.2f} "
                              f"< {cfg.min_progress_order:g}): motion within one shot", measures)
    kind = "fade" if fade else "dissolve"
    return Verdict(True, f"{kind}: middle frames are a blend of the ends (blend gain {gain:.2f})", measures)


def judge_hard(prev: np.ndarray, cur: np.ndarray, cfg: GateConfig) -> Verdict:
    """Keep a hard cut between two adjacent frames unless camera motion explains it."""
    aligned = _rms(_centre(cur, cfg.shift) - aligned_window(prev, cur, cfg.shift))
    plain = _rms(_centre(cur, cfg.shift) - _centre(prev, cfg.shift))
    unexplained = aligned / max(plain, 1e-3)
    measures = {"aligned_change": round(aligned, 3), "unexplained": round(unexplained, 3)}
    if unexplained < cfg.min_unexplained:
        return Verdict(False, f"motion compensation explains {1 - unexplained:.0%} of the change: camera motion",
                       measures)
    return Verdict(True, f"hard cut: the change stays after motion compensation ({aligned:.1f})", measures)
