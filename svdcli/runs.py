"""The layout of a training run folder, in one place.

    RUN_DIR/config.yaml                      the resolved training config
    RUN_DIR/log.jsonl, tb/, summary.json     logs (svdcli.train.runlog) and the run summary
    RUN_DIR/checkpoints/latest               tag of the newest complete checkpoint
    RUN_DIR/checkpoints/step_000500/         one checkpoint (svdcli.train.checkpoint lists its files)
        ema.safetensors                      the exported model: what `svd sample` and `--init` read
        ema_state.safetensors                raw EMA shadows (LoRA runs, where the export is merged)
        lora.safetensors                     LoRA runs: the LoRA matrices alone (`svd sample --lora`)
    RUN_DIR/lora.safetensors                 LoRA runs: the newest checkpoint's LoRA file

A folder with a `checkpoints/` folder is a run; anywhere a checkpoint is read, a run means its
newest export (`resolve_checkpoint`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from svdcli.errors import SvdError

CONFIG = "config.yaml"
LOG = "log.jsonl"
SUMMARY = "summary.json"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
EXPORT = "ema.safetensors"
EMA_SHADOWS = "ema_state.safetensors"
LORA = "lora.safetensors"


def config_file(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def is_run_dir(path: Path) -> bool:
    return Path(path).is_dir() and checkpoints_dir(path).is_dir()


def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def latest_tag(run_dir: Path) -> str | None:
    """The tag `latest` names (None without one); a `latest` that names no tag of ours is an error."""
    f = checkpoints_dir(run_dir) / LATEST
    if not f.is_file():
        return None
    tag = f.read_text(errors="replace").strip()
    if not re.fullmatch(r"step_\d{6,}", tag):
        raise SvdError(f"{f} should name a checkpoint such as step_000500, not {tag[:60]!r}")
    return tag


def write_latest(run_dir: Path, tag: str) -> None:
    """Point `latest` at `tag` atomically: the checkpoint it names is complete."""
    path = checkpoints_dir(run_dir) / LATEST
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tag)
    os.replace(tmp, path)


def latest_export(run_dir: Path) -> Path:
    """The newest exported model of a run dir."""
    tag = latest_tag(run_dir)
    if tag is None:
        raise SvdError(f"{run_dir} has no checkpoint yet (no checkpoints/latest)")
    path = checkpoints_dir(run_dir) / tag / EXPORT
    if not path.is_file():
        raise SvdError(f"{path} is missing: the run's checkpoints/latest names {tag}, which has no EMA export")
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A training run folder means its newest export; anything else is taken as given."""
    path = Path(path).expanduser()
    return latest_export(path) if is_run_dir(path) else path


def read_config(run_dir: Path) -> dict:
    """The run's saved config.yaml as a mapping (not validated: the reader knows its keys)."""
    from svdcli.typed_config import read_yaml

    path = config_file(run_dir)
    if not path.is_file():
        raise SvdError(f"{run_dir} is not a `svd train` run dir (no {CONFIG} in it)")
    return read_yaml(path)
