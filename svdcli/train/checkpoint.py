"""Checkpoints: the DeepSpeed checkpoint (weights, optimizer, scheduler), the exported EMA model
in its family's format, and per-rank trainer state for an exact resume. Folder layout:
svdcli.runs.

    RUN_DIR/checkpoints/latest                 tag of the newest complete checkpoint
    RUN_DIR/checkpoints/step_000500/
        mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed (engine.save_checkpoint)
        ema.safetensors        EMA weights (LoRA merged), written by the family (`Family.save`; svd:
                               `unet.*` in our format), metadata: family, train_config, step, ema
        ema_state.safetensors  the raw EMA shadows (only with LoRA, where ema.safetensors is merged)
        lora.safetensors       LoRA runs: the (EMA) LoRA matrices alone (svdcli.models.lora_file),
                               also copied to RUN_DIR/lora.safetensors once the checkpoint is complete
        trainer_rank{r}.safetensors   step, data position, RNG states of rank r (trainer_state.py)
        config.yaml            the resolved training config
        sha256.json            the sha256 of every file above, recorded once all were written

`latest` is written after sha256.json, so a run killed mid-save (or stopped by a NaN) resumes
from the previous complete checkpoint. DeepSpeed's files are pickles and its loader unpickles
them: `--resume` first checks every file against sha256.json and refuses a checkpoint whose
files were changed, added or removed since they were written (docs/training.md, "Trust").
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from svdcli import runs
from svdcli.errors import SvdError
from svdcli.train.config import TrainConfig, dump_yaml, family_of
from svdcli.train.trainer_state import load_state, save_state, set_rng_state, state_file

CHECKSUMS = "sha256.json"


def raw_state(ema, denoiser, zero3: bool = False) -> dict[str, torch.Tensor]:
    """EMA (or live, without EMA) weights of the denoiser as a state dict in fp32, LoRA unmerged.

    Under ZeRO-3 this gathers partitioned weights, a collective: every rank must call it.
    """
    from svdcli.train.ema import EMA

    ema = ema or EMA(denoiser, decay=0.0, zero3=zero3, track=False)
    return ema.export_state(denoiser)


def merged(state: dict[str, torch.Tensor], cfg: TrainConfig) -> dict[str, torch.Tensor]:
    from svdcli.models.lora import merge_lora_state

    return merge_lora_state(state, cfg.lora.alpha / cfg.lora.rank) if cfg.lora.rank else state


def export_state(ema, denoiser, cfg: TrainConfig, zero3: bool = False) -> dict[str, torch.Tensor]:
    """The exported weights: `raw_state` with LoRA merged (a collective under ZeRO-3)."""
    return merged(raw_state(ema, denoiser, zero3), cfg)


def write_lora(path: Path, state: dict[str, torch.Tensor], denoiser, cfg: TrainConfig, step: int) -> None:
    """The LoRA matrices alone, named as in the denoiser's network (`net.` dropped), with the
    digest of the base weights they were trained on."""
    from svdcli.models.lora_file import save_lora_file

    lora = {k[len("net."):] if k.startswith("net.") else k: v for k, v in state.items()}
    save_lora_file(path, lora, rank=cfg.lora.rank, alpha=cfg.lora.alpha, target=cfg.lora.target,
                   base_digest=denoiser.lora_base_digest, extra={"family": cfg.family, "step": str(step)})


def write_export(path: Path, state: dict[str, torch.Tensor], cfg: TrainConfig, step: int, ema: bool) -> None:
    """The exported model (`svd sample`, `svd convert` and `--init` read it), in the family's
    format, with the family, the training config and the step in its metadata."""
    family_of(cfg).save(path, state, cfg, {"family": cfg.family, "train_config": json.dumps(cfg.to_dict()),
                                           "step": str(step), "ema": str(ema).lower()})


def save(engine, ema, cfg: TrainConfig, run_dir: Path, step: int, trainer_state: dict, rank: int,
         keep: int, zero3: bool) -> Path:
    """Write every rank's part of checkpoint `step`; rank 0 adds the EMA export and prunes old ones."""
    import torch.distributed as dist

    ckpt_dir = runs.checkpoints_dir(run_dir)
    tag = runs.tag_for(step)
    out = ckpt_dir / tag
    out.mkdir(parents=True, exist_ok=True)
    save_state(state_file(out, rank), trainer_state)
    if rank == 0 or zero3:
        raw = raw_state(ema, engine.module, zero3)
    if rank == 0:
        (out / runs.CONFIG).write_text(dump_yaml(cfg))
        write_export(out / runs.EXPORT, merged(raw, cfg), cfg, step, ema is not None)
        if cfg.lora.rank:
            write_lora(out / runs.LORA, raw, engine.module, cfg, step)
        if ema is not None and cfg.lora.rank:
            from safetensors.torch import save_file

            save_file(ema.state_dict(), str(out / runs.EMA_SHADOWS))
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step, "config": cfg.to_dict()},
                           save_latest=False)
    record_checksums(out, rank, dist.get_world_size())
    if rank == 0:
        runs.write_latest(run_dir, tag)  # last: the checkpoint is complete
        if cfg.lora.rank:
            shutil.copyfile(out / runs.LORA, run_dir / f".{runs.LORA}.tmp")
            os.replace(run_dir / f".{runs.LORA}.tmp", run_dir / runs.LORA)
        prune(run_dir, keep)
    dist.barrier()
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (never the one `latest` names)."""
    ckpt_dir = runs.checkpoints_dir(run_dir)
    tags = sorted(p.name for p in ckpt_dir.glob("step_*") if p.is_dir())
    latest = runs.latest_tag(run_dir)
    for tag in tags[:-keep]:
        if tag != latest:
            shutil.rmtree(ckpt_dir / tag, ignore_errors=True)


# --- checksums -----------------------------------------------------------------------------
def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def record_checksums(folder: Path, rank: int, world_size: int) -> None:
    """Once every rank's files of a checkpoint exist: hash them (split over the ranks) and let
    rank 0 write sha256.json. A collective: every rank must call it."""
    import torch.distributed as dist

    dist.barrier()  # every rank's files are written
    names = [_files(folder) if rank == 0 else None]
    dist.broadcast_object_list(names, src=0)  # one listing: another node's view of the folder may lag
    mine = {name: file_sha256(folder / name) for name in names[0][rank::world_size]}
    parts = [None] * world_size
    dist.all_gather_object(parts, mine)
    if rank == 0:
        digests = {name: d for part in parts for name, d in part.items()}
        _write_atomic(folder / CHECKSUMS, json.dumps({"sha256": digests}, indent=1, sort_keys=True))


def verify_checksums(folder: Path) -> None:
    """Refuse a checkpoint whose files differ from the ones written (before anything is unpickled)."""
    record = folder / CHECKSUMS
    if not record.is_file():
        raise SvdError(f"--resume: {record} is missing, so the pickled DeepSpeed files of {folder.name} "
                       "cannot be checked; not loading them (an older svdcli wrote no checksums)")
    try:
        digests = json.loads(record.read_text())["sha256"]
        digests = {str(k): str(v) for k, v in digests.items()}
    except Exception as exc:  # noqa: BLE001 - unreadable, not JSON, wrong layout: all a bad file
        raise SvdError(f"--resume: {record} is not a readable checksum record ({type(exc).__name__})") from None
    present = set(_files(folder))
    added, missing = sorted(present - set(digests)), sorted(set(digests) - present)
    if added:
        raise SvdError(f"--resume: {folder / added[0]} was not written with the checkpoint ({record.name} "
                       "does not list it); not loading a checkpoint with unknown files")
    if missing:
        raise SvdError(f"--resume: {folder / missing[0]} is missing from the checkpoint")
    for name in sorted(digests):
        if file_sha256(folder / name) != digests[name]:
            raise SvdError(f"--resume: {folder / name} differs from the file written at save time "
                           f"(sha256 mismatch with {record.name}): corrupt or replaced; not loading it")


# --- resume --------------------------------------------------------------------------------
def resume_folder(run_dir: Path, rank: int, ema: bool) -> Path:
    """The checkpoint --resume continues from, with every file it reads checked: called before
    any model or process group exists, so a bad run folder fails at once."""
    ckpt_dir = runs.checkpoints_dir(run_dir)
    tag = runs.latest_tag(run_dir)
    if tag is None:
        raise SvdError(f"--resume: {run_dir} has no checkpoint to resume from")
    folder = ckpt_dir / tag
    if not folder.is_dir():
        raise SvdError(f"--resume: {ckpt_dir / 'latest'} names {tag}, but {folder} does not exist")
    verify_checksums(folder)
    load_state(state_file(folder, rank))
    if ema:
        _ema_file(folder)
    return folder


def load(engine, ema, folder: Path, rank: int, cfg: TrainConfig) -> dict:
    """Restore engine, EMA and RNG from checkpoint `folder` (checked by `resume_folder`); return
    this rank's trainer state."""
    trainer, rng_tensors, rng_scalars = load_state(state_file(folder, rank))
    shadows = _ema_shadows(folder, ema, cfg) if ema is not None else None
    path, _ = engine.load_checkpoint(str(folder.parent), tag=folder.name)
    if path is None:
        raise SvdError(f"--resume: DeepSpeed could not load {folder}")
    if shadows is not None:
        ema.load_state_dict(shadows)
    if cfg.lora.rank and (folder / runs.LORA).is_file():  # the base came from the checkpoint, not --init
        from svdcli.models.lora_file import read_lora_file

        engine.module.lora_base_digest = read_lora_file(folder / runs.LORA).base_digest
    set_rng_state(rng_tensors, rng_scalars)
    return trainer


def _ema_file(folder: Path) -> Path:
    """The raw shadows (LoRA runs) or the export, checked to be a readable safetensors file."""
    from safetensors import safe_open

    path = folder / runs.EMA_SHADOWS
    path = path if path.is_file() else folder / runs.EXPORT
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # noqa: BLE001 - missing, truncated, not safetensors
        raise SvdError(f"--resume: {path} is not a readable EMA file ({type(exc).__name__}: {str(exc)[:120]})") from None
    return path


def _ema_shadows(folder: Path, ema, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """EMA shadows by module name; the export holds them in the family's naming."""
    from safetensors.torch import load_file

    path = _ema_file(folder)
    if path.name == runs.EXPORT:
        exported = family_of(cfg).saved_state(path)
        state = {name: exported.get(name) for name in ema.shadow}
    else:
        state = load_file(str(path))
    bad = [n for n in ema.shadow if state.get(n) is None or state[n].shape != ema.shadow[n].shape]
    if bad:
        raise SvdError(f"--resume: {path} does not hold this model's EMA weights ({len(bad)} missing or "
                       f"of another shape, e.g. {bad[0]})")
    return state
