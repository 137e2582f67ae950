"""Cut detection accuracy on labelled real footage and the synthetic cases, against the libraries.

Footage and labels: tests/data/cut_labels.json (labelled by eye; 'tune' parts were used to
choose the detector, 'heldout' parts were not). One table per split: precision / recall / F1 at
0.5 s and clips straddling a labelled boundary, summed over the clips, for
  - svdcli cascade, svdcli transnetv2, svdcli both (one decode, the stage's own code),
  - PySceneDetect ContentDetector and AdaptiveDetector with defaults (its own decode, SceneManager),
  - three PySceneDetect ContentDetector passes at ~native / 15 / 7.5 fps (frame_skip 0 / 1 / 3,
    thresholds 27 / 22 / 17, merged within 0.5 s), a do-it-yourself cascade,
  - TransNetV2 alone: the package's own `predict_frames` + `predictions_to_scenes` (threshold
    0.5) on 48x27 RGB frames decoded with PyAV.
The synthetic cases (svdcli.video.synth.write_cut_suite) report gradual transitions found and
false cuts. Megamind.avi (opencv-python's sample data, held out) is fetched from the package
index into bench-out/ once, when it can be. Speed is bench_cuts.py's business.
"""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench-out" / "cuts_accuracy"
LABELS = REPO / "tests" / "data" / "cut_labels.json"
SHARED = Path(os.environ.get("SVD_SHARED", REPO.parent / "shared")) / "testdata"
OPENCV_SDIST = "opencv-python==4.14.0.94"
MEGAMIND = "opencv/samples/data/Megamind.avi"


def fetch_megamind() -> Path | None:
    """opencv-python's Megamind.avi (a film trailer clip), from its sdist on PyPI, kept in bench-out/."""
    import json
    import urllib.request

    target = OUT / "Megamind.avi"
    if target.is_file():
        return target
    OUT.mkdir(parents=True, exist_ok=True)
    name, version = OPENCV_SDIST.split("==")
    try:
        request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            stem = f"{name.replace('-', '_')}-{version}.tar.gz"
            [url] = [f["url"] for f in json.load(r)["files"] if f["filename"] == stem]
        sdist = OUT / "opencv-sdist.tar.gz"
        urllib.request.urlretrieve(url, sdist)
    except Exception as exc:  # noqa: BLE001 - offline: the table goes on without this clip
        print(f"  (Megamind.avi not fetched: {type(exc).__name__}: {exc})")
        return None
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(MEGAMIND))
        target.write_bytes(tar.extractfile(member).read())
    sdist.unlink()
    return target


def svdcli_modes(path: Path) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    """{mode: (boundary times, ok clips)} for cascade, transnetv2 and both from one decode."""
    from svdcli.curate.scorers.cascade import merge_boundaries
    from svdcli.curate.stages.cuts import CutsConfig, CutsStage, segments
    from svdcli.video.decode import decode_once

    cfg = CutsConfig(detector="both")
    cascade = CutsStage(cfg).detector()
    info = decode_once(path, cascade.consumers())
    levels = [cascade.native.boundaries()] + [lv.boundaries(cascade.native)
                                              for lv in sorted(cascade.slow, key=lambda lv: -lv.spec.rate)]
    learned = [lv.boundaries() for lv in cascade.extra]
    out = {}
    for mode, per_level in (("cascade", levels), ("transnetv2", learned), ("both", levels + learned)):
        bounds = merge_boundaries([list(map(_copy, lv)) for lv in per_level], cfg.cascade.merge_tolerance)
        segs = segments(bounds, info.end_time, cascade.frame_after, cfg)
        out[mode] = ([b.time for b in bounds], [(s.start, s.end) for s in segs if not s.short])
    return out


def _copy(b):
    from svdcli.curate.scorers.cascade import Boundary

    return Boundary(b.time, b.last_old, b.first_new, dict(b.scores), b.gradual)


def scenedetect_runs(path: Path) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    def run(detector, frame_skip=0):
        video = open_video(str(path))
        manager = SceneManager()
        manager.add_detector(detector)
        manager.detect_scenes(video, frame_skip=frame_skip)
        scenes = [(a.seconds, b.seconds) for a, b in manager.get_scene_list()]
        return [a for a, _ in scenes[1:]], scenes

    out = {"psd content": run(ContentDetector()), "psd adaptive": run(AdaptiveDetector())}
    passes = [run(ContentDetector(threshold=t, min_scene_len=15), skip)[0]
              for skip, t in ((0, 27.0), (1, 22.0), (3, 17.0))]
    merged: list[float] = []
    for t in sorted(x for p in passes for x in p):
        if not merged or t - merged[-1] > 0.5:
            merged.append(t)
    edges = [0.0, *merged, float("inf")]
    out["psd 3 passes"] = (merged, list(zip(edges, edges[1:])))
    return out


def transnet_alone(path: Path, network) -> tuple[list[float], list[tuple[float, float]]]:
    import av
    import cv2
    import torch

    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(rgb, (48, 27), interpolation=cv2.INTER_AREA))
            times.append(float(frame.pts * stream.time_base))
    times = [t - times[0] for t in times]
    with torch.no_grad():
        single, _ = network.predict_frames(torch.from_numpy(np.stack(frames)), quiet=True)
    scenes = network.predictions_to_scenes(single.numpy(), threshold=0.5)
    fps = (len(times) - 1) / max(times[-1], 1e-9)
    starts = [times[int(a)] for a, _ in scenes[1:]]
    clips = [(times[int(a)], times[min(int(b), len(times) - 1)] + 1 / fps) for a, b in scenes]
    return starts, clips


def accuracy_table() -> None:
    from svdcli.curate.scorers.cut_eval import LabelledClip, Score, load_labels, score_clip
    from svdcli.curate.scorers.transnet import load_network

    clips = load_labels(LABELS, SHARED if SHARED.is_dir() else None)
    megamind = fetch_megamind()
    clips = [LabelledClip(c.name, megamind, c.truth, c.split, c.fps) if c.name == "megamind" and megamind else c
             for c in clips]
    network = load_network("cpu")
    totals: dict[tuple[str, str], Score] = {}
    for clip in clips:
        if clip.path is None:
            print(f"  {clip.name}: footage not on this machine, skipped")
            continue
        runs = {**svdcli_modes(clip.path), **scenedetect_runs(clip.path),
                "transnetv2 alone": transnet_alone(clip.path, network)}
        line = []
        for name, (bounds, kept) in runs.items():
            for split, lo, hi in clip.parts():
                score = score_clip(bounds, kept, clip.truth, lo, hi)
                totals[(split, name)] = totals.get((split, name), Score(0, 0, 0)) + score
                line.append(f"{name}/{split} {score.tp}/{score.fp}/{score.fn}/{score.straddling}")
        print(f"  {clip.name:12s} tp/fp/fn/straddling: " + "; ".join(line[:6]) + " ...", flush=True)
    for split in ("tune", "heldout"):
        print(f"\n{split}: {'detector':18s} {'P':>6s} {'R':>6s} {'F1':>6s} {'tp':>4s} {'fp':>4s} {'fn':>4s} straddling")
        for (s, name), sc in totals.items():
            if s == split:
                print(f"{'':8s}{name:18s} {sc.precision:6.3f} {sc.recall:6.3f} {sc.f1:6.3f} {sc.tp:4d} {sc.fp:4d} "
                      f"{sc.fn:4d} {sc.straddling:4d}")
        ours, ref = totals.get((split, "cascade")), totals.get((split, "psd content"))
        if ours and ref:
            print(f"        F1 cascade / PySceneDetect ContentDetector: {ours.f1:.3f} / {ref.f1:.3f} "
                  f"= {ours.f1 / max(ref.f1, 1e-9):.3f}x (target F1 >= 0.97, 0 straddling)")


def synthetic_table() -> None:
    from svdcli.video.synth import write_cut_suite

    folder = OUT / "synthetic"
    truths = write_cut_suite(folder)
    print(f"\nsynthetic ({len(truths)} videos): found gradual / all gradual, false cuts")
    for name, truth in truths.items():
        runs = svdcli_modes(folder / name)
        spans = [(a / truth.fps, b / truth.fps) for _, a, b in truth.transitions]
        cuts = [c / truth.fps for c in truth.cuts]
        cells = []
        for mode, (bounds, _) in runs.items():
            found = sum(any(a - 0.5 <= t <= b + 0.5 for t in bounds) for a, b in spans)
            false = sum(not any(a - 0.5 <= t <= b + 0.5 for a, b in spans) and not any(abs(t - c) <= 0.5 for c in cuts)
                        for t in bounds)
            cells.append(f"{mode} {found}/{len(spans)} gradual, {false} false")
        print(f"  {name:18s} " + "; ".join(cells))


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    accuracy_table()
    synthetic_table()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
