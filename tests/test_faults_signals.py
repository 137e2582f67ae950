"""SIGTERM and concurrent runs: a scheduler's SIGTERM is handled as Ctrl-C is (finished work kept,
exit 143, a rerun resumes; training saves a checkpoint first, in bounded time), and two runs on
one workdir never trip over each other (a lock naming the other run; stale locks taken over)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from bad_inputs import assert_error_line
from odd_files import make
from test_faults import PACK, _pack_manifest, invoke

from svdcli.curate.lock import Busy, holding
from svdcli.manifest.io import read_manifest

REPO = Path(__file__).resolve().parents[1]
RECIPE = "name: small\nreport: false\nstages:\n  cuts: {}\n  motion: {}\n"
TERMINATED = "terminated (SIGTERM); finished work is kept and a rerun resumes"


def sigterm_on_call(monkeypatch, owner, name: str, at: int) -> list:
    """`owner.name` sends this process SIGTERM on its `at`-th call (once); returns the calls."""
    real, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(args)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for i in range(4):
        make("good", folder).rename(folder / f"v{i}.mp4")
    return folder


# --- SIGTERM ------------------------------------------------------------------------------------
def test_sigterm_stops_curate_run_as_ctrl_c_does_and_a_rerun_resumes(videos, tmp_path, monkeypatch):
    from svdcli.curate.stages.cuts_motion import CutsMotionStage

    (tmp_path / "r.yaml").write_text(RECIPE)
    args = ["curate", "run", tmp_path / "r.yaml", "--input", videos, "--workdir", tmp_path / "w", "--no-progress"]
    calls = sigterm_on_call(monkeypatch, CutsMotionStage, "process", at=3)
    result = invoke(*args)
    assert result.exit_code == 143 and TERMINATED in result.output and "Traceback" not in result.output, \
        result.output
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handler is gone again
    assert not (tmp_path / "w/manifests/cuts.parquet").exists()
    calls.clear()
    assert invoke(*args).exit_code == 0
    assert len(calls) == 2  # 4 videos, 2 finished before the signal: their parts were kept
    assert len(read_manifest(tmp_path / "w/manifests/motion.parquet")) == 4


def test_sigterm_stops_pack_keeping_finished_shards(tmp_path, monkeypatch):
    from svdcli.shards import pack

    manifest = _pack_manifest(tmp_path / "in", ["good", "two_frames", "one_frame"])
    args = ["pack", "--manifest", manifest, "--out", tmp_path / "shards", *PACK, "--shard-size", 1, "--min-frames", 1]
    sigterm_on_call(monkeypatch, pack, "write_shard", at=2)
    result = invoke(*args)
    assert result.exit_code == 143 and TERMINATED in result.output, result.output
    assert [p.name for p in (tmp_path / "shards").glob("*.tar")] == ["000000.tar"]
    monkeypatch.undo()
    result = invoke(*args)
    assert result.exit_code == 0 and "2 shards written, 1 already done" in result.output, result.output


def test_sigterm_during_training_saves_a_checkpoint_then_exits_143(tmp_path, monkeypatch):
    from test_bad_inputs import _train_args
    from test_train_helpers import make_shards, one_thread  # noqa: F401 - one intra-op thread

    from svdcli.train import loop

    shards = make_shards(tmp_path / "data")
    out = tmp_path / "run"
    sigterm_on_call(monkeypatch, loop, "_micro_step", at=3)  # during step 3 (of 50)
    args = [a if a != "steps=1" else "steps=50" for a in _train_args(shards, out)]
    result = invoke(*args)
    assert result.exit_code == 143, result.output
    assert "terminated (SIGTERM) after step 3: checkpoint" in result.output and "step_000003 saved" in result.output
    assert (out / "checkpoints/latest").read_text().strip() == "step_000003"
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in events][-2:] == ["checkpoint", "terminated"]
    monkeypatch.undo()
    resumed = invoke("train", "--stage", "video", "--data", shards, "--out", out, "--resume", "--steps", 4,
                     "--deepspeed", REPO / "pipelines/deepspeed/zero2.json", "--no-progress", "--no-tensorboard")
    assert resumed.exit_code == 0 and "done: 4 steps" in resumed.output, resumed.output


def test_the_training_stop_is_bounded_in_time_and_a_second_sigterm_is_final():
    from svdcli.errors import Terminated
    from svdcli.train.stop import StopOnSigterm

    exits = []
    with StopOnSigterm(timeout=0.2, exit_now=exits.append) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and exits == []  # the step goes on
        time.sleep(0.5)  # ... longer than the timeout allows
        assert exits == [143]
        with pytest.raises(Terminated, match="twice"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_real_sigterm_to_a_curate_run_with_worker_processes(tmp_path):
    """The signal from outside, as a scheduler sends it, to a run with two spawned workers."""
    folder = tmp_path / "long"
    for i in range(6):
        make("good", folder).rename(folder / f"v{i}.mp4")
    (tmp_path / "r.yaml").write_text(RECIPE)
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "svdcli", "curate", "run", str(tmp_path / "r.yaml"), "--input", str(folder),
           "--workdir", str(work), "--no-progress", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "10000"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not list(work.glob("manifests/cuts.parquet.parts/*/stage.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal came (a very fast machine)")
    assert proc.returncode == 143 and TERMINATED in output and "Traceback" not in output, output
    assert not (work / "manifests/cuts.parquet").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(read_manifest(work / "manifests/motion.parquet")) == 6


# --- concurrent runs ------------------------------------------------------------------------------
def test_two_runs_on_one_workdir_one_stops_at_once_naming_the_other(videos, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    work = tmp_path / "w"
    work.mkdir()
    # a run in progress: a live process (this one's parent) on this host
    (work / ".svd-run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                    "started": "2024-01-01 00:00:00"}))
    result = invoke("curate", "run", tmp_path / "r.yaml", "--input", videos, "--workdir", work, "--no-progress")
    assert_error_line(result, 2, f"another run holds the workdir {work} (pid {os.getppid()} on host "
                      f"{socket.gethostname()}, since 2024-01-01 00:00:00)", f"delete {work / '.svd-run.lock'}")
    assert not (work / "manifests/cuts.parquet").exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("holder, busy", [
    ({"pid": "dead", "host": "here"}, False),  # its process is gone: stale, taken over
    ({"pid": "parent", "host": "here"}, True),
    ({"pid": 12345, "host": "elsewhere.example"}, True),  # cannot be checked from here
    (None, True),  # a lock being written right now (empty)
])
def test_stale_locks_are_taken_over_and_live_ones_are_not(tmp_path, holder, busy):
    lock = tmp_path / "x.lock"
    if holder is None:
        lock.write_bytes(b"")
    else:
        pid = {"dead": _dead_pid(), "parent": os.getppid()}.get(holder["pid"], holder["pid"])
        host = socket.gethostname() if holder["host"] == "here" else holder["host"]
        lock.write_text(json.dumps({"pid": pid, "host": host, "started": "then"}))
    if busy:
        with pytest.raises(Busy, match=f"delete {lock}"), holding(lock, "it"):
            pass
        assert lock.exists()
    else:
        with holding(lock, "it"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not lock.exists()


def _race(folder: Path, ranks: list[tuple[int, int]], trials: int, tasks: int) -> list[list[str]]:
    """One race_stage.py process per (rank, world_size), running the same trials at the same moments;
    what each trial ended as, per process."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    start = time.time() + 3.0  # every process imported and waiting
    procs = [subprocess.Popen([sys.executable, str(REPO / "tests/race_stage.py"), str(folder), str(trials),
                               str(tasks), str(r), str(w), str(start), "0.6"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r, w in ranks]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    return [list(t) for t in zip(*(o.strip().splitlines() for o in outputs))]


@pytest.mark.parametrize("ranks", [[(0, 1), (0, 1)], [(0, 2), (1, 2)]], ids=["two-same-runs", "two-ranks"])
def test_concurrent_runs_of_a_stage_never_crash_and_merge_once(tmp_path, ranks):
    trials, tasks, busy = 6, 40, 0
    for k, said in enumerate(_race(tmp_path, ranks, trials, tasks)):
        out = tmp_path / f"t{k}" / "clips.parquet"
        assert all(s in ("merged", "partial") or s.startswith("busy: another run holds") for s in said), said
        if ranks[0][1] > 1:  # ranks share the work: exactly one of them merges it
            assert sorted(said) == ["merged", "partial"], said
        else:  # the same run twice: one does it; the other stops at once (or, started late, finds it done)
            assert said.count("merged") >= 1, said
            busy += any(s.startswith("busy") for s in said)
        rows = pq.read_table(out).to_pylist()
        assert sorted(r["clip_id"] for r in rows) == sorted(f"v{i:03d}_{j}" for i in range(tasks) for j in range(2))
        assert not (out.parent / "clips.parquet.parts").exists(), (said, [str(p) for p in out.parent.rglob("*")])
    assert ranks[0][1] > 1 or busy >= 1  # started together, the second run found the first holding it


def _live_lock(path: Path) -> None:
    """A lock held by a live process of this host (this process's parent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}))


def test_a_stage_run_stops_when_another_holds_its_part_folder_and_merges_once(tmp_path):
    import svdcli.curate  # noqa: F401 - the manifest columns
    from race_stage import Sleepy

    from svdcli.curate.parts import MERGE_CLAIM, parts_folder
    from svdcli.curate.runner import run_stage
    from svdcli.curate.stage import Task

    stage, out = Sleepy(), tmp_path / "clips.parquet"
    tasks = [Task(f"v{i}", f"v{i}") for i in range(6)]
    folder = parts_folder(out, stage)
    _live_lock(folder / ".run.rank000.lock")
    with pytest.raises(Busy, match=f"another run holds the cuts stage's parts of {out}"):
        run_stage(stage, tasks, out)
    (folder / ".run.rank000.lock").unlink()
    assert not run_stage(stage, tasks, out, rank=0, world_size=2).complete  # rank 1's half is not done
    _live_lock(folder / MERGE_CLAIM)  # rank 0 finished too and is merging
    late = run_stage(stage, tasks, out, rank=1, world_size=2)
    assert late.tasks_done == 6 and not late.complete and not late.tables  # it leaves the merge to rank 0
    (folder / MERGE_CLAIM).unlink()
    assert run_stage(stage, tasks, out, rank=1, world_size=2).complete
