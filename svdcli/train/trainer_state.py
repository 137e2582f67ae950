"""Per-rank trainer state for an exact resume: the step, the data position and the RNG states,
as safetensors (the RNG arrays) with JSON metadata (everything else). Nothing is unpickled.

    trainer_rank{r}.safetensors
        tensors   rng.torch (uint8), rng.numpy (int64, MT19937 keys), rng.python (int64, 625 words)
        metadata  "trainer": {"step": ..., "data": {...}}
                  "rng": {"numpy": {"pos", "has_gauss", "cached_gaussian"}, "python": {"version", "gauss_next"}}
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from svdcli.errors import SvdError

TENSORS = {"rng.torch": torch.uint8, "rng.numpy": torch.int64, "rng.python": torch.int64}


def state_file(folder: Path, rank: int) -> Path:
    return folder / f"trainer_rank{rank}.safetensors"


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The torch, numpy and python RNG states as (tensors, JSON-able scalars)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(keys.astype(np.int64)),
               "rng.python": torch.tensor(words, dtype=torch.int64)}
    scalars = {"numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": cached},
               "python": {"version": version, "gauss_next": gauss_next}}
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    n, p = scalars["numpy"], scalars["python"]
    torch.set_rng_state(tensors["rng.torch"])
    np.random.set_state((n["name"], tensors["rng.numpy"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate((p["version"], tuple(int(w) for w in tensors["rng.python"].tolist()), p["gauss_next"]))


def save_state(path: Path, trainer: dict) -> None:
    """Write `trainer` (step, data position: JSON-able) and this process's RNG states."""
    from safetensors.torch import save_file

    tensors, scalars = rng_state()
    save_file(tensors, str(path), metadata={"trainer": json.dumps(trainer), "rng": json.dumps(scalars)})


def load_state(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(trainer dict, RNG tensors, RNG scalars) from `path`; SvdError naming the file if it is unusable."""
    from safetensors import safe_open

    if not path.is_file():
        raise SvdError(f"--resume: {path} is missing (was the run started with another number of processes?)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        trainer, scalars = json.loads(meta["trainer"]), json.loads(meta["rng"])
        trainer = {"step": int(trainer["step"]), "data": dict(trainer["data"])}
        scalars = {"numpy": dict(scalars["numpy"]), "python": dict(scalars["python"])}
    except Exception as exc:  # noqa: BLE001 - safetensors, JSON and key errors all mean a bad file
        raise SvdError(f"--resume: {path} is not a readable trainer state "
                       f"({type(exc).__name__}: {str(exc)[:200]})") from None
    bad = [k for k, dtype in TENSORS.items() if k not in tensors or tensors[k].dtype != dtype]
    if bad:
        raise SvdError(f"--resume: {path} lacks or mistypes the RNG tensors {bad}")
    return trainer, tensors, scalars
