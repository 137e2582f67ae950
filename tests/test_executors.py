"""The executor seam: any executor that follows the contract writes the manifest the local one
writes, a run on one resumes a run on another, failed tasks become the stage's error rows, and
the progress callback hears every task."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from test_motion import clip_rows, write_rows
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate.executors import run_task
from svdcli.curate.executors.local import LocalExecutor
from svdcli.curate.parts import PartStore, parts_folder
from svdcli.curate.runner import run_stage
from svdcli.curate.stage import Stage, Task
from svdcli.curate.stages.motion import MotionStage, run_motion
from svdcli.manifest.io import read_manifest
from svdcli.video.synth import Shot, write_video

FPS = 24.0


class ReversedExecutor:
    """A stand-in for a distributed executor: each 'worker' gets its own copy of the stage (a
    pickle round trip, as shipping it to another machine would), set up once, and tasks finish
    in another order than they were given. Stops after `stop_after` tasks, as a killed run would."""

    def __init__(self, workers: int = 2, stop_after: int | None = None):
        self.workers, self.stop_after = workers, stop_after
        self.setups = 0

    def map(self, stage, tasks):
        copies = [pickle.loads(pickle.dumps(stage)) for _ in range(self.workers)]
        for copy in copies:
            copy.setup()
            self.setups += 1
        for n, task in enumerate(reversed(tasks)):
            if n == self.stop_after:
                raise KeyboardInterrupt
            yield task, run_task(copies[n % self.workers], task)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Four videos of two clips each (static, then a pan): four tasks for a per-clip stage."""
    folder = tmp_path_factory.mktemp("videos")
    rows = []
    for i in range(4):
        video = folder / f"v{i}.mp4"
        write_video(video, [Shot(24, seed=i), Shot(24, seed=i + 10, speed=(1.0 + i, 0.0))], size=(96, 64), fps=FPS)
        rows += clip_rows(video, [0, 24, 48], FPS, (96, 64), tag=f"v{i}")
    return write_rows(rows, folder / "clips.parquet")


def test_another_executor_writes_the_manifest_the_local_one_writes(corpus, tmp_path):
    executor = ReversedExecutor()
    run_motion(corpus, tmp_path / "other.parquet", executor=executor)
    run_motion(corpus, tmp_path / "local.parquet")
    assert executor.setups == 2  # once per worker, not per task
    assert read_manifest(tmp_path / "other.parquet").equals(read_manifest(tmp_path / "local.parquet"))


def test_a_run_killed_on_one_executor_resumes_on_the_local_one(corpus, tmp_path, monkeypatch):
    out = tmp_path / "motion.parquet"
    with pytest.raises(KeyboardInterrupt):
        run_motion(corpus, out, executor=ReversedExecutor(stop_after=3))
    assert not out.exists()
    calls = []
    original = MotionStage.process
    monkeypatch.setattr(MotionStage, "process", lambda self, payload: calls.append(payload) or original(self, payload))
    result, written = run_motion(corpus, out)
    assert len(calls) == 1 and result.tasks_done == 4  # the three finished videos are not scored again
    monkeypatch.undo()
    run_motion(corpus, tmp_path / "fresh.parquet")
    assert read_manifest(written).equals(read_manifest(tmp_path / "fresh.parquet"))


def test_a_set_up_model_stage_ships_as_its_settings():
    from svdcli.curate.stages.text import TextConfig, TextStage

    stage = TextStage(TextConfig(detector="dbnet", device="cpu"))
    stage.setup()
    shipped = pickle.loads(pickle.dumps(stage))
    assert stage.detector is not None and shipped.detector is None  # the worker loads its own
    assert shipped.fingerprint() == stage.fingerprint() and shipped.resources().loads_model


class Flaky(Stage):
    """Fails on odd payloads; its error rows name the payload."""

    name = "motion"  # borrows the motion columns
    columns = ("clip_id", "motion_score", "motion_error")

    def process(self, payload):
        if payload % 2:
            raise ValueError(f"odd {payload}")
        return [{"clip_id": f"c{payload}", "motion_score": float(payload)}]

    def error_rows(self, payload, message):
        return [{"clip_id": f"c{payload}", "motion_error": message}]


@pytest.mark.parametrize("executor", [LocalExecutor(), LocalExecutor(workers=2), ReversedExecutor()],
                         ids=["serial", "pool", "other"])
def test_failed_tasks_become_error_rows_on_every_executor(tmp_path, executor):
    reports = []
    result = run_stage(Flaky(), [Task(str(k), k) for k in range(4)], tmp_path / "out.parquet", executor=executor,
                       progress=reports.append, describe="flaky")
    rows = sorted(result.tables[0].to_pylist(), key=lambda r: r["clip_id"])
    assert [(r["clip_id"], r["motion_score"], r["motion_error"]) for r in rows] == [
        ("c0", 0.0, None), ("c1", None, "ValueError: odd 1"), ("c2", 2.0, None), ("c3", None, "ValueError: odd 3")]
    assert (result.rows, result.errors) == (4, 2)
    assert [r.event for r in reports] == ["start", "task", "task", "task", "task", "end"]
    assert (reports[-1].tasks, reports[-1].rows, reports[-1].errors, reports[0].describe) == (4, 4, 2, "flaky")


def test_progress_ends_and_parts_stay_when_a_run_is_interrupted(tmp_path):
    reports = []
    with pytest.raises(KeyboardInterrupt):
        run_stage(Flaky(), [Task(str(k), k) for k in range(4)], tmp_path / "out.parquet",
                  executor=ReversedExecutor(stop_after=2), progress=reports.append)
    assert reports[-1].event == "end" and reports[-1].tasks == 2
    store = PartStore(parts_folder(tmp_path / "out.parquet", Flaky()), Flaky.columns)
    assert store.done_keys() == {"3", "2"}  # flushed on the way out
    again = []
    run_stage(Flaky(), [Task(str(k), k) for k in range(4)], tmp_path / "out.parquet", progress=again.append)
    assert again[0].resumed == 2 and again[-1].tasks == 2


def test_the_cli_bar_shows_tasks_rows_and_errors(corpus, tmp_path):
    result = CliRunner().invoke(app, ["curate", "motion", "-m", str(corpus), "-o", str(tmp_path / "m.parquet")])
    assert result.exit_code == 0, result.output
    assert "motion" in result.output and "4/4" in result.output and "videos" in result.output
    assert "· 8 rows · 0 errors" in result.output


class BlasThreads:
    """A stage that records how many threads numpy's BLAS may use while it runs."""

    name = "blas"

    def setup(self) -> None:
        pass

    def process(self, payload):
        from threadpoolctl import threadpool_info

        return [{"threads": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]}]


def blas_threads() -> dict[str, int]:
    from threadpoolctl import threadpool_info

    return {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_a_run_in_this_process_holds_numpy_blas_to_its_threads_and_gives_them_back():
    """A spawned worker limits BLAS through the environment before numpy loads; a run in this
    process must limit the loaded libraries (their idle threads spin on the cores the decoder
    and the flow thread need: ~0.3 CPU s per minute of video) and restore them afterwards."""
    import cv2  # noqa: F401 - OpenCV brings its own OpenBLAS: both are loaded before the run

    before = blas_threads()
    if not before or max(before.values()) < 2:
        pytest.skip("BLAS runs on one thread here: nothing to limit")
    [(_, rows)] = list(LocalExecutor(workers=1, threads=1).map(BlasThreads(), [Task("t", None)]))
    assert set(rows[0]["threads"]) == {1}
    assert blas_threads() == before


OPENCV_THREADS = """
import sys
from svdcli.curate.executors.local import limit_threads
limit_threads(5)
print('cv2' in sys.modules)
import cv2
print(cv2.getNumThreads())
limit_threads(1)
print(cv2.getNumThreads())
"""


def test_opencv_takes_a_worker_s_threads_whether_it_loads_before_or_after_the_limit():
    """A stage that uses OpenCV only on its own threads (motion) loads it there, after the
    executor set the limit: OpenCV reads it from the environment as it loads."""
    out = subprocess.run([sys.executable, "-c", OPENCV_THREADS], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "5", "1"], out


FREE_AND_ALLOCATE = """
import resource, sys
import numpy as np
from svdcli.curate.executors.local import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):  # a few decoded 720p pictures held at once, then freed, as a worker does
    held = [np.ones(1280 * 720 * 3 // 2, np.uint8) for _ in range(4)]
    del held
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_a_worker_reuses_freed_frame_buffers_instead_of_faulting_in_fresh_pages():
    runs = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", FREE_AND_ALLOCATE, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        runs[mode] = (out[0], int(out[1]))
    if runs["keep"][0] == "False":
        pytest.skip("this C library does not take the setting")
    assert runs["keep"][1] * 10 < runs["default"][1], runs  # ~1,300 vs ~130,000 here
