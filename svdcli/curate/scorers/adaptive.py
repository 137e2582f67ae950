"""PySceneDetect's AdaptiveDetector arithmetic, frame by frame, without its per-frame bookkeeping.

The native level's hard-cut score is AdaptiveDetector's (scenedetect 0.7, `detectors/
adaptive_detector.py` over `content_detector.py`, default weights, `min_scene_len=0`):

    content(k) = (mean|dH| + mean|dS| + mean|dV|) / 3        HSV of frame k against frame k-1 (0 for k=0)
    ratio(k)   = content(k) / mean(content(k-w..k+w) without k)   w = window (2), capped at 255;
                 255 when that mean is 0 and content(k) >= min_content
    cut at k  <=> ratio(k) >= threshold and content(k) >= min_content

Driving the library's `process_frame` costs ~0.8 ms a frame on 64-pixel frames: a frame-timecode
object and its arithmetic per frame, and, to read the ratio back, a StatsManager that also makes
it run Canny edge detection (weight 0) on every frame. This class does the same sums in the same
order on the same HSV conversion, so its cuts and ratios are the library's, frame for frame
(tests/test_cuts_adaptive.py checks that against AdaptiveDetector on real footage), at ~0.05 ms.
"""
from __future__ import annotations

import numpy as np


class AdaptiveRatio:
    """Feed BGR uint8 frames in order; `feed` returns the cuts it can now decide, as
    (frame index, adaptive ratio), `window` frames after the frame itself."""

    def __init__(self, threshold: float = 3.0, min_content: float = 15.0, window: int = 2):
        self.threshold, self.min_content, self.window = threshold, min_content, window
        self.scores: list[float] = []  # content(k) of every frame fed
        self._prev: np.ndarray | None = None

    def content(self, hsv: np.ndarray) -> float:
        """content(k) of an (h, w, 3) HSV frame against the previous one (0.0 for the first)."""
        prev, self._prev = self._prev, hsv
        if prev is None:
            return 0.0
        pixels = float(hsv.shape[0] * hsv.shape[1])
        sums = np.abs(hsv.astype(np.int16) - prev).reshape(-1, 3).sum(axis=0, dtype=np.int64)
        d_hue, d_sat, d_lum = (int(s) / pixels for s in sums)
        # the library's weighted sum: weights (1, 1, 1, 0 for edges), divided by their total
        return (0 + d_hue * 1.0 + d_sat * 1.0 + d_lum * 1.0 + 0.0 * 0.0) / 3.0

    def ratio(self, k: int) -> float:
        """ratio(k), once frames up to k + window were fed."""
        w = self.window
        target = self.scores[k]
        around = 0
        for i in range(k - w, k + w + 1):
            if i != k:
                around += self.scores[i]
        average = around / (2.0 * w)
        if abs(average) >= 0.00001:
            return min(target / average, 255.0)
        return 255.0 if target >= self.min_content else 0.0

    def feed(self, bgr: np.ndarray) -> list[tuple[int, float]]:
        import cv2

        self.scores.append(self.content(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)))
        return self._decide()

    def feed_many(self, hsv: np.ndarray) -> list[tuple[int, float]]:
        """`feed` for a (B, h, w, 3) stack of HSV frames at once: one array operation for the
        batch's differences, the same integer sums, so the same scores."""
        pixels = float(hsv.shape[1] * hsv.shape[2])
        first = self._prev is None
        stack = hsv if first else np.concatenate([self._prev[None], hsv])
        diffs = np.abs(np.diff(stack.astype(np.int16), axis=0))  # (B', h, w, 3); B' = 0 for a lone first frame
        sums = diffs.reshape(len(stack) - 1, hsv.shape[1] * hsv.shape[2], 3).sum(axis=1, dtype=np.int64)
        self._prev = hsv[-1]
        cuts = []
        # ContentDetector's weighted mean (weights H, S, V = 1, edges = 0) in the library's own
        # order of operations, so each float is the library's float
        scores = ([0.0] if first else []) + [(0 + h / pixels * 1.0 + s / pixels * 1.0 + v / pixels * 1.0 + 0.0 * 0.0) / 3.0
                                             for h, s, v in sums.tolist()]
        for score in scores:
            self.scores.append(score)
            cuts += self._decide()
        return cuts

    def _decide(self) -> list[tuple[int, float]]:
        k = len(self.scores) - 1 - self.window  # the frame now centred in a full window
        if k < self.window:
            return []
        ratio = self.ratio(k)
        if ratio >= self.threshold and self.scores[k] >= self.min_content:
            return [(k, ratio)]
        return []
