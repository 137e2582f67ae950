"""Two CPU processes under torchrun (gloo, ZeRO-2) through the real `svd train` command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_train_helpers import REPO, make_shards, tiny_overrides


def test_two_process_torchrun_ends_with_identical_weights_on_both_ranks(tmp_path):
    data = make_shards(tmp_path / "data")
    out = tmp_path / "run"
    sets = [a for kv in tiny_overrides(steps=3, **{"optim.lr": 1e-2}) for a in ("--set", kv)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "svdcli", "train", "--stage", "video", "--config", str(REPO / "pipelines/train/video.yaml"),
           "--data", str(data), "--out", str(out), "--deepspeed", str(REPO / "pipelines/deepspeed/zero2.json"),
           "--no-progress", "--no-tensorboard", *sets]
    # One intra-op thread per process: two processes x two threads on two cores crawl.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["ranks_agree"]
    assert sorted(p.name for p in (out / "checkpoints" / "step_000003").glob("trainer_rank*.safetensors")) == \
        ["trainer_rank0.safetensors", "trainer_rank1.safetensors"]
    logged = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert [l["step"] for l in logged] == [1, 2, 3]


@pytest.mark.slow
def test_two_process_resume_follows_the_uninterrupted_losses(tmp_path):
    """Per-rank trainer states and the checksums the ranks record together survive a resume."""
    data = make_shards(tmp_path / "data")
    sets = [a for kv in tiny_overrides(steps=4, checkpoint_every=2, **{"data.batch_size": 1}) for a in ("--set", kv)]

    def train(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "svdcli", "train", "--stage", "video", "--config", str(REPO / "pipelines/train/video.yaml"),
               "--data", str(data), "--out", str(out), "--deepspeed", str(REPO / "pipelines/deepspeed/zero2.json"),
               "--no-progress", "--no-tensorboard", *sets, *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def losses(out):
        return [(l["step"], l["loss"]) for l in map(json.loads, (out / "log.jsonl").read_text().splitlines())
                if "loss" in l]

    train(tmp_path / "full")
    train(tmp_path / "split", "--steps", "2")
    train(tmp_path / "split", "--resume")
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    digests = json.loads((tmp_path / "split/checkpoints/step_000002/sha256.json").read_text())["sha256"]
    assert {"trainer_rank0.safetensors", "trainer_rank1.safetensors", "mp_rank_00_model_states.pt"} <= set(digests)
