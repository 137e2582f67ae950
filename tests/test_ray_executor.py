"""The Ray executor on a real local cluster the test starts (a head and one more worker node on
127.0.0.1, token authentication on, as Ray 2.60 sets it up): the same manifests as the local
executor, a worker node killed mid-run loses and duplicates nothing, a killed driver resumes."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from test_motion import clip_rows, write_rows

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before ray loads, as the executor does when a token exists
ray = pytest.importorskip("ray")

from svdcli.curate.executors.ray import RayExecutor  # noqa: E402
from svdcli.curate.stages.motion import run_motion  # noqa: E402
from svdcli.manifest.io import read_manifest  # noqa: E402
from svdcli.video.synth import Shot, write_video  # noqa: E402
from numeric import assert_close_ulps  # noqa: E402

FPS = 24.0
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(args: list[str], temp: str) -> subprocess.Popen:
    """`ray start ... --block` in its own process group, so killing the group kills that node only."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", RAY_AUTH_MODE="token")
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *args],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill(node: subprocess.Popen) -> None:
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.wait(timeout=30)


def _alive_nodes(address: str) -> int:
    out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}, log_to_driver=False); "
                          "print(sum(n['Alive'] for n in ray.nodes()))"], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, RAY_AUTH_MODE="token"))
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster():
    # the cluster's own token, in the environment of its nodes and of this driver: nothing is read
    # from or written to ~/.ray, so a fresh machine (no token yet) runs the test as well
    saved = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    temp = tempfile.mkdtemp(prefix="svdray", dir="/tmp")  # unix socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _node(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
                  "--temp-dir", temp], temp)
    worker = None
    try:
        deadline = time.time() + 90
        while _alive_nodes(address) < 1:
            assert time.time() < deadline, "the Ray head did not start"
            time.sleep(1)
        worker = _node(["--address", address, "--node-ip-address", "127.0.0.1"], temp)
        while _alive_nodes(address) < 2:
            assert time.time() < deadline, "the Ray worker node did not join"
            time.sleep(1)
        yield {"address": address, "worker": worker}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in (worker, head):
            if node is not None:
                _kill(node)
        if saved is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = saved


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Ten videos of two clips each: ten motion tasks."""
    folder = tmp_path_factory.mktemp("videos")
    rows = []
    for i in range(10):
        video = folder / f"v{i}.mp4"
        write_video(video, [Shot(24, seed=i), Shot(24, seed=i + 10, speed=(1.0 + i % 4, 0.0))], size=(96, 64), fps=FPS)
        rows += clip_rows(video, [0, 24, 48], FPS, (96, 64), tag=f"v{i}")
    return write_rows(rows, folder / "clips.parquet")


def _rows(path: Path) -> list[dict]:
    table = read_manifest(path)
    return sorted(table.to_pylist(), key=lambda r: r["clip_id"])


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "motion.parquet"
    run_motion(corpus, out)
    return _rows(out)


def test_ray_writes_the_local_manifest(cluster, corpus, local, tmp_path):
    result, written = run_motion(corpus, tmp_path / "ray.parquet", executor=RayExecutor(cluster["address"]))
    assert result.complete and result.errors == 0
    assert _rows(written) == local


def test_a_model_stage_runs_on_an_actor_pool_and_writes_the_local_manifest(cluster, tmp_path):
    """text (DBNet, `loads_model`): actors load the detector once each and give the local rows."""
    from svdcli.curate.stages.text import run_text

    video = tmp_path / "t.mp4"
    write_video(video, [Shot(24, seed=1), Shot(24, seed=2, text="BREAKING NEWS", text_area=0.1)], size=(320, 192),
                fps=FPS)
    manifest = write_rows(clip_rows(video, [0, 24, 48], FPS, (320, 192), tag="t"), tmp_path / "clips.parquet")
    _, here = run_text(manifest, tmp_path / "local.parquet", detector="dbnet")
    executor = RayExecutor(cluster["address"])
    result, there = run_text(manifest, tmp_path / "ray.parquet", detector="dbnet", executor=executor)
    assert result.complete and result.errors == 0
    assert _rows(there) == _rows(here)
    assert _rows(there)[1]["text_area"] > 0.07  # the texty clip is seen as such


def test_caption_actors_load_the_vlm_once_and_report_tokens_per_second(cluster, tmp_path):
    """caption (a tiny video-language model): the local captions, and each actor's tokens per busy second."""
    pytest.importorskip("transformers")
    from svdcli.curate.stages.caption import run_caption, throughput_line
    from svdcli.demo.tiny_models import write_tiny_vlm

    video = tmp_path / "c.mp4"
    write_video(video, [Shot(24, seed=s, speed=(2.0, 1.0)) for s in range(3)], size=(96, 64), fps=FPS)
    manifest = write_rows(clip_rows(video, [0, 24, 48, 72], FPS, (96, 64), tag="c"), tmp_path / "clips.parquet")
    settings = {"model": "vlm", "pretrained": str(write_tiny_vlm(tmp_path / "vlm")), "frames": 4,
                "max_new_tokens": 5, "frame_size": 96}
    _, here = run_caption(manifest, tmp_path / "local.parquet", **settings)
    executor = RayExecutor(cluster["address"])
    result, there = run_caption(manifest, tmp_path / "ray.parquet", executor=executor, **settings)
    assert result.complete and result.errors == 0
    columns = ["clip_id", "caption", "caption_video", "caption_tokens", "caption_model"]
    assert _rows(there) and [{k: r[k] for k in columns} for r in _rows(there)] == \
        [{k: r[k] for k in columns} for r in _rows(here)]
    tokens = sum(r["caption_tokens"] for r in _rows(there))
    assert result.metered == tokens > 0
    assert result.workers and sum(w["metered"] for w in result.workers) == tokens  # every task, on some actor
    assert all(w["busy_seconds"] > 0 and w["setup_seconds"] > 0 for w in result.workers if w["tasks"])
    assert "per actor, tokens per busy second" in throughput_line(result)


def test_recipe_resources_are_what_ray_reserves(cluster, corpus, tmp_path):
    """num_gpus from a recipe's `resources:` reaches Ray: a cluster without GPUs says so."""
    from svdcli.errors import SvdError

    executor = RayExecutor(cluster["address"], resources={"motion": {"num_gpus": 1}})
    with pytest.raises(SvdError, match="asks for 1 GPU per worker; the cluster has 0"):
        run_motion(corpus, tmp_path / "m.parquet", executor=executor)
    from svdcli.curate.stages.motion import MotionStage

    half = RayExecutor(cluster["address"], resources={"motion": {"num_cpus": 0.5}}).stage_resources(MotionStage())
    assert (half.cpus, half.gpus) == (0.5, 0.0)
    result, _ = run_motion(corpus, tmp_path / "half.parquet", executor=RayExecutor(
        cluster["address"], resources={"motion": {"num_cpus": 0.5}}))
    assert result.complete and result.errors == 0  # fractions are reserved as given


def test_pack_on_ray_writes_the_local_shards(cluster, tmp_path):
    """`svd pack --executor ray`: one task per shard, the same shards (frames, json) and index."""
    from test_pack import make_corpus, shard_contents

    from svdcli.shards.pack import PackConfig, run_pack

    manifest, _ = make_corpus(tmp_path, corrupt=True)
    cfg = PackConfig(size=(32, 48), frames=8, min_frames=4, fps=8.0, shard_size=2, format="npy")
    local = run_pack(manifest, tmp_path / "local", cfg, workers=1, progress=False)
    there = run_pack(manifest, tmp_path / "ray", cfg, progress=False, executor=RayExecutor(cluster["address"]))
    assert not there.failed and there.shards_written == local.shards_written > 1
    assert shard_contents(tmp_path / "ray") == shard_contents(tmp_path / "local")
    import pyarrow.parquet as pq

    index = lambda name: pq.read_table(tmp_path / name / "index.parquet").to_pylist()  # noqa: E731
    assert index("ray") == index("local")


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_near_duplicate_search_on_ray_gives_the_local_neighbours(cluster, kind):
    """The index goes to the object store once; query blocks searched as tasks, reassembled in order."""
    import numpy as np

    from svdcli.curate.scorers.near_duplicates import neighbour_lists, normalise

    rng = np.random.default_rng(0)
    base = normalise(rng.normal(size=(400, 32)))
    emb = normalise(np.concatenate([base, base[:60] + 0.05 * rng.normal(size=(60, 32))]))  # 60 planted
    here = neighbour_lists(emb, 0.9, kind, nprobe=4, batch=64)
    there = neighbour_lists(emb, 0.9, kind, nprobe=4, batch=64, executor=RayExecutor(cluster["address"]))
    assert len(here[1]) >= 120  # the planted pairs, both ways
    np.testing.assert_array_equal(there[0], here[0])   # offsets
    np.testing.assert_array_equal(there[1], here[1])   # neighbours
    assert_close_ulps(there[2], here[2])               # inner products: computed in another process


def test_a_worker_node_killed_mid_run_loses_and_duplicates_nothing(cluster, corpus, local, tmp_path):
    done = []
    killer = threading.Thread(target=lambda: (_wait_for(lambda: len(done) >= 2), _kill(cluster["worker"])))
    killer.start()
    result, written = run_motion(corpus, tmp_path / "ray.parquet", executor=RayExecutor(cluster["address"]),
                                 progress=lambda p: done.append(p) if p.event == "task" else None)
    killer.join()
    assert cluster["worker"].poll() is not None  # the node is gone
    assert result.complete and result.errors == 0
    assert _rows(written) == local  # every clip once, the same scores


def test_a_killed_driver_resumes_on_either_executor(cluster, corpus, local, tmp_path):
    out = tmp_path / "ray.parquet"
    cmd = [sys.executable, "-m", "svdcli", "curate", "motion", "-m", str(corpus), "-o", str(out), "--no-progress",
           "--executor", "ray", "--ray-address", cluster["address"]]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)  # connected and part-way through (or done: then the rerun has nothing to do)
    driver.send_signal(signal.SIGINT)  # Ctrl-C: the runner flushes what came back
    driver.wait(timeout=60)
    run_motion(corpus, out)  # the rerun on the local executor finishes the ray run
    assert _rows(out) == local


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_soak_a_recipe_through_repeated_worker_node_deaths(cluster, tmp_path):
    """`svd curate run` (cuts + motion) on Ray over 40 videos while worker nodes join and are
    killed three times: the manifests equal the local executor's."""
    from typer.testing import CliRunner

    from svdcli.cli.main import app

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(40):
        write_video(videos / f"v{i:02d}.mp4", [Shot(24, seed=i), Shot(24, seed=i + 50, speed=(2.0, 0.0))],
                    size=(96, 64), fps=FPS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("report: false\nstages:\n  cuts: {}\n  motion: {}\n")
    run = lambda work, *extra: CliRunner().invoke(app, ["curate", "run", str(recipe), "--input", str(videos),  # noqa: E731
                                                        "--workdir", str(work), "--no-progress", *extra])
    assert run(tmp_path / "local").exit_code == 0
    stop = threading.Event()

    def churn():
        for _ in range(3):
            node = _node(["--address", cluster["address"], "--node-ip-address", "127.0.0.1"], "")
            stop.wait(6)
            _kill(node)
            if stop.is_set():
                return

    killer = threading.Thread(target=churn)
    killer.start()
    result = run(tmp_path / "ray", "--executor", "ray", "--ray-address", cluster["address"])
    stop.set()
    killer.join()
    assert result.exit_code == 0, result.output
    for stage in ("cuts", "motion"):
        assert _rows(tmp_path / "ray" / "manifests" / f"{stage}.parquet") == \
            _rows(tmp_path / "local" / "manifests" / f"{stage}.parquet")
