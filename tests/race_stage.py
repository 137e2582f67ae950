"""A process of the concurrency test (test_faults_signals.py): runs a tiny stage over TASKS tasks
into FOLDER/tK/clips.parquet for each trial K, as `svd curate cuts` does (run_stage, then the
merge and the clean-up), trial K starting at START + K * INTERVAL (wall clock, shared by every
process of the test), and prints one line per trial: 'merged', 'partial' or 'busy: <message>'.
Any other ending is a traceback and exit code 1.

    python tests/race_stage.py FOLDER TRIALS TASKS RANK WORLD_SIZE START INTERVAL
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from svdcli.curate.stage import Stage, Task


class Sleepy(Stage):
    """Each task takes 10 ms and gives two rows."""

    name = "cuts"  # reuses the cuts columns of the manifest schema
    columns = ("clip_id", "video_id", "video_path", "status", "error")

    def process(self, payload: str) -> list[dict]:
        time.sleep(0.01)
        return [{"clip_id": f"{payload}_{i}", "video_id": payload, "video_path": payload, "status": "ok"}
                for i in range(2)]

    def error_rows(self, payload: str, message: str) -> list[dict]:
        return [{"clip_id": f"{payload}_error", "video_path": payload, "status": "error", "error": message}]


def trial(out: Path, tasks: int, rank: int, world_size: int) -> str:
    from svdcli.curate.lock import Busy
    from svdcli.curate.parts import TASK_COLUMN, clean_parts
    from svdcli.curate.runner import run_stage
    from svdcli.manifest.io import write_manifest

    stage = Sleepy()
    try:
        result = run_stage(stage, [Task(f"v{i:03d}", f"v{i:03d}") for i in range(tasks)], out, rank=rank,
                           world_size=world_size, flush_rows=8, flush_seconds=0.01)
    except Busy as exc:
        return f"busy: {exc}"
    if not result.complete:
        return "partial"
    write_manifest(result.tables[0].drop_columns([TASK_COLUMN]).sort_by("clip_id"), out)
    clean_parts(out, stage)
    return "merged"


if __name__ == "__main__":
    import svdcli.curate  # noqa: F401 - registers the stage columns in the manifest schema

    folder, trials, tasks, rank, world, start, interval = sys.argv[1:8]
    for k in range(int(trials)):
        time.sleep(max(0.0, float(start) + k * float(interval) - time.time()))
        print(trial(Path(folder) / f"t{k}" / "clips.parquet", int(tasks), int(rank), int(world)), flush=True)
