"""SVD micro-conditioning stored with every sample: `fps_id` and `motion_bucket_id`.

- `fps_id` is the frame rate minus one. The official SVD checkpoints were conditioned on
  fps - 1 (the sgm sampling script writes its output at `fps_id + 1` fps, and diffusers'
  pipeline subtracts 1 from the fps it is given), so a sample shown at F fps stores
  `fps_id = round(F) - 1`. A loader that keeps every s-th frame shows F/s fps and must use
  `fps_id_for(F / s)`; `svdcli.shards.loader` does.
- `motion_bucket_id` is a monotone map of the clip's `motion_score` into 0..255. The score and
  its unit are defined once, by the motion stage (`svdcli.curate.stages.motion`, `MOTION_UNITS`):
  static shots score ~0-0.1, a 1 px/frame pan of 720p30 video 0.4, fast pans 5-20.
    * `linear` (default): `round(scale * motion_score)`, clipped to 0..255. With the default
      scale 32, a score of 4 lands on 128, close to SVD's default 127, and 8 or more
      saturates at 255. The mapping does not depend on which clips are packed, so two
      packs of different corpora use the same buckets.
    * `percentile`: `round(255 * rank)`, with `rank` the clip's score percentile (0..1) among
      the packed clips. Uses the whole range whatever the unit, but the same score maps to
      different buckets in different corpora.
  A clip without a motion score (the motion stage was not run) gets 127, SVD's default, and
  the pack's stats count it.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

DEFAULT_MOTION_BUCKET = 127  # the official sampling default, used when a clip has no score
MOTION_MAPS = ("linear", "percentile")


def fps_id_for(fps: float) -> int:
    """SVD's fps conditioning for frames shown at `fps` frames per second: round(fps) - 1."""
    return max(int(round(fps)) - 1, 0)


@dataclass
class MotionBuckets:
    """Maps motion scores to `motion_bucket_id` in 0..255 (see the module docstring)."""

    mode: str = "linear"
    scale: float = 32.0
    corpus: list[float] = field(default_factory=list)  # sorted scores, for `percentile`

    def __post_init__(self) -> None:
        if self.mode not in MOTION_MAPS:
            raise ValueError(f"motion map must be one of {MOTION_MAPS}, not {self.mode!r}")
        self.corpus = sorted(s for s in self.corpus if s is not None and math.isfinite(s))

    def __call__(self, score: float | None) -> int:
        if score is None or not math.isfinite(score):
            return DEFAULT_MOTION_BUCKET
        if self.mode == "linear":
            value = self.scale * score
        else:
            value = 255.0 * self._rank(score)
        return int(min(max(round(value), 0), 255))

    def _rank(self, score: float) -> float:
        """Mid-rank percentile in 0..1, so ties share one bucket and the order is kept."""
        n = len(self.corpus)
        if n <= 1:
            return 0.5
        lo = bisect.bisect_left(self.corpus, score)
        hi = bisect.bisect_right(self.corpus, score)
        return min(max((lo + hi - 1) / 2 / (n - 1), 0.0), 1.0)

    def describe(self) -> dict:
        """What goes into stats.json so the mapping can be reproduced."""
        out = {"mode": self.mode, "missing_score_bucket": DEFAULT_MOTION_BUCKET}
        if self.mode == "linear":
            out["scale"] = self.scale
            out["rule"] = "clip(round(scale * motion_score), 0, 255)"
        else:
            out["corpus_size"] = len(self.corpus)
            out["rule"] = "round(255 * mid-rank percentile of motion_score among packed clips)"
        return out
