"""benchmarks/gpu.sh --cpu-dry-run: every part of the GPU suite runs on the CPU at tiny sizes,
through the same code the GPU run takes, and writes its numbers."""
import json
import os
import subprocess
import sys

import pytest

from test_train_helpers import REPO


@pytest.mark.slow   # ~25 s on an idle 2-core machine: five parts, each importing its own stack
def test_gpu_suite_dry_run_runs_every_part(tmp_path):
    # rendezvous variables an earlier in-process run leaves behind: the suite's svd train must not use them
    leftovers = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    env = {**os.environ, **leftovers, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks/gpu.sh"), "--cpu-dry-run", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert results["device"].startswith("CPU dry run")
    for part in ("unet", "train", "sample", "clip", "transnet"):
        assert "result" in results[part], f"{part}: {results[part]}"
    unet = results["unet"]["result"]
    assert {r["checkpointing"] for r in unet} == {False, True}
    assert all(r["step_s"] > 0 and r["planned_gib"] > 0 and r["model_tflop"] > 0 for r in unet)
    train = results["train"]["result"]
    assert train["steps"] == 4 and train["step_s"] > 0 and train["planned_gib"] > 0
    assert results["sample"]["result"]["ours_s"] > 0 and results["transnet"]["result"]["frames_per_s"] > 0


def test_gpu_sh_without_torch_says_what_to_set(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "benchmarks/gpu.sh"), "--cpu-dry-run"], cwd=REPO,
                          env={**os.environ, "PYTHON": "/bin/false"}, capture_output=True, text=True)
    assert proc.returncode == 2 and "set PYTHON to an interpreter with torch" in proc.stderr
