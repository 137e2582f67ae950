"""What a declared per-clip stage costs: its command's start-up and the base's machinery per clip.

1. Whole commands: `svd curate --help` (lists the declared stages by name and help alone), and
   `svd curate motion --help` and `svd curate text --help`, whose commands are built from the
   stage declarations (importing the stage module), against `svd curate cuts --help` (a command
   registered by its own module; the baseline), in turn, median of the pairwise ratios.
2. A stage declared in a few lines (frames + score: the contrast of each clip's first, middle
   and last frame) run over a manifest by the base (tasks, part files, merge, manifest write),
   against the straightforward loop reading the same frames and scoring them (the baseline).

    .venv/bin/python -m benchmarks.bench_stage_seam
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.timing import interleaved
from svdcli.curate.stage import ClipStage, Frames, StageSpec

REPO = Path(__file__).resolve().parents[1]
REPEATS = 5


@dataclass
class ContrastSettings:
    pass


class Contrast(ClipStage):
    frames = Frames("fml", long_side=128)

    def score(self, frames: np.ndarray) -> dict:
        return {"contrast": float(frames.std())}


def contrast_spec() -> StageSpec:
    import pyarrow as pa

    from svdcli.manifest.schema import Column

    columns = (Column("contrast", pa.float32(), "contrast", "std of the frames' RGB values"),
               Column("contrast_error", pa.string(), "contrast", "error message"))
    return StageSpec(name="contrast", columns=columns, config=ContrastSettings, stage=Contrast)


def command_startup() -> None:
    def svd(*args: str):
        return lambda: subprocess.run([sys.executable, "-m", "svdcli", *args], cwd=REPO, check=True,
                                      capture_output=True)

    for args in (("curate", "--help"), ("curate", "motion", "--help"), ("curate", "text", "--help")):
        built, eager, ratio = interleaved(svd(*args), svd("curate", "cuts", "--help"), REPEATS)
        print(f"svd {' '.join(args)} {built:.3f} s vs svd curate cuts --help {eager:.3f} s (baseline): "
              f"x{ratio:.2f}", flush=True)


def corpus(folder: Path, videos: int = 4, clips: int = 6) -> Path:
    from svdcli.manifest.io import table_from_rows, write_manifest
    from svdcli.video.probe import video_id
    from svdcli.video.synth import Shot, write_video

    rows = []
    for v in range(videos):
        path = folder / f"v{v}.mp4"
        write_video(path, [Shot(24, seed=v * clips + k) for k in range(clips)], size=(320, 192), fps=24.0)
        vid = video_id(path)
        rows += [dict(clip_id=f"{vid}_{24 * k}_{24 * k + 24}", video_id=vid, video_path=str(path),
                      start_time=k * 1.0, end_time=k + 1.0, start_frame=24 * k, end_frame=24 * k + 24, num_frames=24,
                      fps=24.0, width=320, height=192, status="ok") for k in range(clips)]
    return write_manifest(table_from_rows(rows, list(rows[0])), folder / "clips.parquet")


def straightforward(manifest: Path) -> list[float]:
    """The baseline: every clip's frames read and scored in a plain loop, nothing written."""
    from svdcli.curate.frames import frame_times
    from svdcli.manifest.io import read_manifest
    from svdcli.video.seek import analysis_size, read_frames_at

    out = []
    for clip in read_manifest(manifest).to_pylist():
        size = analysis_size(clip["width"], clip["height"], 128, upscale=False)
        out.append(float(read_frames_at(clip["video_path"], frame_times(clip, "fml"), size=size).std()))
    return out


def declared_stage_overhead() -> None:
    from svdcli.curate import stages
    from svdcli.curate.per_clip import runner_of
    from svdcli.manifest.io import read_manifest

    spec = contrast_spec()
    stages.register(spec)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = corpus(Path(tmp))
            outs = iter(range(1000))
            run = lambda: runner_of(spec)(manifest, Path(tmp) / f"out{next(outs)}.parquet")  # noqa: E731
            base, loop, ratio = interleaved(run, lambda: straightforward(manifest), REPEATS)
            scored = read_manifest(Path(tmp) / "out0.parquet").column("contrast").to_pylist()
            same = np.allclose(scored, straightforward(manifest), rtol=1e-5)
            n = len(scored)
            print(f"declared stage over {n} clips: {base:.3f} s ({1000 * base / n:.1f} ms/clip) vs the "
                  f"straightforward loop {loop:.3f} s ({1000 * loop / n:.1f} ms/clip, baseline): x{ratio:.2f}; "
                  f"same scores: {same}", flush=True)
    finally:
        stages.unregister("contrast")


def main() -> None:
    command_startup()
    declared_stage_overhead()


if __name__ == "__main__":
    main()
