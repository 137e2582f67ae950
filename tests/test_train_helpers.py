"""Shared by the training tests: tiny synthetic shards written with `svd pack`, tiny configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from svdcli.manifest.io import table_from_rows, write_manifest
from svdcli.shards.pack import PackConfig, run_pack
from svdcli.video.probe import video_id
from svdcli.video.synth import Shot, render_shot, write_frames

REPO = Path(__file__).resolve().parents[1]
ZERO2 = REPO / "pipelines/deepspeed/zero2.json"
SRC_W, SRC_H, FPS = 96, 64, 8.0
COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
           "num_frames", "fps", "width", "height", "status", "motion_score", "caption", "keep", "drop_reason"]


def make_shards(folder: Path, clips: int = 8, frames: int = 4, shard_size: int = 2,
                latents: str | None = None) -> Path:
    """`clips` panning clips packed at 64x64 (tiny latents 8x8) into shards of `shard_size`
    (with `latents`, a VAE source such as "tiny:0", also their stored latents)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in range(clips // 2):
        path = write_frames(folder / f"v{v}.mp4",
                            render_shot(Shot(2 * frames, seed=v, speed=(2.0 + v, 1.0)), SRC_H, SRC_W), FPS)
        vid = video_id(path)
        for c in range(2):
            a, b = c * frames, (c + 1) * frames
            rows.append(dict(clip_id=f"{vid}_{a}_{b}", video_id=vid, video_path=str(path.resolve()),
                             start_time=a / FPS, end_time=b / FPS, start_frame=a, end_frame=b,
                             num_frames=frames, fps=FPS, width=SRC_W, height=SRC_H, status="ok",
                             motion_score=float(v), caption=f"a pan number {v}", keep=True, drop_reason=None))
    manifest = write_manifest(table_from_rows(rows, COLUMNS), folder / "clips.parquet")
    cfg = PackConfig(size=(64, 64), frames=frames, min_frames=frames, fps=FPS, shard_size=shard_size,
                     format="npy", latents=latents)
    run_pack(manifest, folder / "shards", cfg, workers=1, progress=False)
    return folder / "shards"


def tiny_overrides(frames: int = 2, steps: int = 4, **extra) -> list[str]:
    """Overrides that turn a shipped recipe into a seconds-long CPU run of the tiny model."""
    values = {"model": "tiny", "steps": steps, "precision": "fp32", "activation_checkpointing": "false",
              "data.frames": frames, "data.height": 64, "data.width": 64, "data.batch_size": 2,
              "data.grad_accum": 1, "data.num_workers": 0, "data.shuffle_buffer": 4,
              "optim.warmup_steps": 0, "log_every": 1, "checkpoint_every": 1000}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def losses(run_dir: Path) -> list[float]:
    import json

    lines = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    return [l["loss"] for l in lines if "loss" in l]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two intra-op threads on a shared 2-core machine run ten times slower, not faster.

    Autouse in every test module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(out: Path, data: Path, stage: str = "video", resume: bool = False, init: Path | None = None,
        tensorboard: bool = False, **overrides) -> dict:
    """A tiny `svd train` run (ZeRO-2, one CPU process) with `tiny_overrides(**overrides)`."""
    from svdcli.train.loop import TrainOptions, train

    opts = TrainOptions(stage=stage, config=REPO / f"pipelines/train/{stage}.yaml", data=data, out=out,
                      deepspeed=ZERO2, init=init, resume=resume,
                      overrides=tuple(tiny_overrides(**overrides)), progress=False, tensorboard=tensorboard)
    return train(opts)
