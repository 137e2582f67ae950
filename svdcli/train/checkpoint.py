"""Checkpoints: the DeepSpeed checkpoint (weights, optimizer, scheduler), the exported EMA model
as safetensors with its config, and per-rank trainer state for an exact resume.

    RUN_DIR/checkpoints/latest                 tag of the newest complete checkpoint
    RUN_DIR/checkpoints/step_000500/
        mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed (engine.save_checkpoint)
        ema.safetensors        EMA UNet weights (LoRA merged) in our format (`unet.*`, save_ours),
                               metadata: unet_config, train_config, step
        ema_state.safetensors  the raw EMA shadows (only with LoRA, where ema.safetensors is merged)
        trainer_rank{r}.pt     step, data position, RNG states of rank r
        config.yaml            the resolved training config

`latest` is written by DeepSpeed after all files of the tag exist, so a run killed mid-save
(or stopped by a NaN) resumes from the previous complete checkpoint.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from svdcli.errors import SvdError
from svdcli.train.config import TrainConfig, dump_yaml


def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def latest_tag(ckpt_dir: Path) -> str | None:
    f = ckpt_dir / "latest"
    return f.read_text().strip() if f.is_file() else None


def latest_ema_file(run_dir: Path) -> Path:
    """The newest exported EMA model of a run dir."""
    tag = latest_tag(run_dir / "checkpoints")
    if tag is None:
        raise SvdError(f"{run_dir} has no checkpoint yet (no checkpoints/latest)")
    return run_dir / "checkpoints" / tag / "ema.safetensors"


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def unet_state(ema, denoiser, cfg: TrainConfig, zero3: bool = False) -> dict[str, torch.Tensor]:
    """EMA (or live, without EMA) weights as a plain UNet state dict in fp32, LoRA merged.

    Under ZeRO-3 this gathers partitioned weights, a collective: every rank must call it.
    """
    from svdcli.train.ema import EMA
    from svdcli.train.lora import merge_lora_state

    ema = ema or EMA(denoiser, decay=0.0, zero3=zero3, track=False)
    state = ema.export_state(denoiser)
    state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    if cfg.lora.rank:
        state = merge_lora_state(state, cfg.lora.alpha / cfg.lora.rank)
    return state


def write_unet(path: Path, state: dict[str, torch.Tensor], unet_cfg, cfg: TrainConfig, step: int,
               ema: bool) -> None:
    """Our checkpoint format (`svd sample`, `svd convert` and `--init` read it): `unet.*` tensors,
    the UNet config and the training config as metadata."""
    from svdcli.models.checkpoints import save_ours

    save_ours(path, {"unet": state}, unet_config=unet_cfg,
              extra_metadata={"train_config": json.dumps(cfg.to_dict()), "step": str(step),
                              "ema": str(ema).lower()})


def save(engine, ema, cfg: TrainConfig, run_dir: Path, step: int, trainer_state: dict, rank: int,
         keep: int, zero3: bool) -> Path:
    """Write every rank's part of checkpoint `step`; rank 0 adds the EMA export and prunes old ones."""
    import torch.distributed as dist

    ckpt_dir = run_dir / "checkpoints"
    tag = tag_for(step)
    out = ckpt_dir / tag
    out.mkdir(parents=True, exist_ok=True)
    torch.save({**trainer_state, "rng": rng_state()}, out / f"trainer_rank{rank}.pt")
    if rank == 0 or zero3:
        state = unet_state(ema, engine.module, cfg, zero3)
    if rank == 0:
        (out / "config.yaml").write_text(dump_yaml(cfg))
        write_unet(out / "ema.safetensors", state, engine.module.net.cfg, cfg, step, ema is not None)
        if ema is not None and cfg.lora.rank:
            from safetensors.torch import save_file

            save_file(ema.state_dict(), str(out / "ema_state.safetensors"))
    dist.barrier()
    # DeepSpeed writes `latest` last, after its own files (all ranks take part).
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step, "config": cfg.to_dict()})
    dist.barrier()
    if rank == 0:
        prune(ckpt_dir, keep)
    return out


def prune(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (never the one `latest` names)."""
    tags = sorted(p.name for p in ckpt_dir.glob("step_*") if p.is_dir())
    latest = latest_tag(ckpt_dir)
    for tag in tags[:-keep]:
        if tag != latest:
            shutil.rmtree(ckpt_dir / tag, ignore_errors=True)


def load(engine, ema, run_dir: Path, rank: int) -> dict:
    """Restore engine, EMA and RNG from the latest checkpoint; return this rank's trainer state."""
    ckpt_dir = run_dir / "checkpoints"
    tag = latest_tag(ckpt_dir)
    if tag is None:
        raise SvdError(f"--resume: no checkpoint in {ckpt_dir}")
    path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None:
        raise SvdError(f"--resume: DeepSpeed could not load {ckpt_dir / tag}")
    state_file = ckpt_dir / tag / f"trainer_rank{rank}.pt"
    if not state_file.is_file():
        raise SvdError(f"--resume: {state_file} is missing (was the run started with another number of processes?)")
    state = torch.load(state_file, weights_only=False)
    if ema is not None:
        ema.load_state_dict(_ema_shadows(ckpt_dir / tag, ema))
    set_rng_state(state.pop("rng"))
    return state


def _ema_shadows(folder: Path, ema) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    raw = folder / "ema_state.safetensors"
    if raw.is_file():
        return load_file(str(raw))
    exported = load_file(str(folder / "ema.safetensors"))  # "unet.<name>"; the module has "net.<name>"
    return {name: exported["unet." + name[len("net."):]] for name in ema.shadow}
