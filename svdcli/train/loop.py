"""`svd train`: one function, `train(opts)`, that runs a training stage on every process of a launch.

The model family (svdcli.families, named by the config's `family`) supplies the denoiser, the
frozen encoders, the batch preparation, the noise levels and the loss; the step sees only the
denoiser D(x, sigma, cond) and that loss. Every random draw of a step (sigma, noise, cond_aug,
dropout, VAE posterior) comes from a generator seeded by (seed, step, micro-batch, rank), and
the data stream is replayable, so a resumed run follows the same loss trajectory as an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from svdcli import runs
from svdcli.diffusion.samplers import step_generator
from svdcli.errors import SvdError, Terminated
from svdcli.train import checkpoint as ckpt
from svdcli.train.stop import StopOnSigterm
from svdcli.train.config import TrainConfig, config_from_dict, dump_yaml, family_of, load_config, read_yaml


@dataclass
class TrainOptions:
    """What `svd train` (and `svd tune`) was asked to run."""

    stage: str | None
    config: Path | None
    data: Path
    out: Path
    deepspeed: Path | None = None
    init: Path | None = None
    family: str | None = None
    resume: bool = False
    overrides: tuple[str, ...] = ()
    local_rank: int = -1
    tensorboard: bool = True
    progress: bool = True
    stop_timeout: float = 25.0  # seconds from SIGTERM to exit, checkpoint included (train/stop.py)
    force: bool = False       # start even when the plan says the run cannot fit the GPU


class NonFiniteLoss(SvdError):
    """The loss became NaN or inf; the run stopped and its last good checkpoint is kept."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


RESUME_MAY_CHANGE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "optim.lr", "optim.grad_clip",
                     "validation.data", "validation.every", "validation.batches", "validation.levels",
                     "validation.sigmas", "validation.seed")


def resolve_config(opts: TrainOptions) -> TrainConfig:
    """The run's config: from --config + overrides, or (with --resume) the one saved in the run dir.

    On resume only RESUME_MAY_CHANGE may differ: steps (to extend a run), logging and
    checkpoint cadence, and lr / clipping (to get past a NaN). Anything else would silently
    train another model than the one the checkpoint holds.
    """
    saved = runs.config_file(opts.out)
    if not (opts.resume and saved.exists()):
        if opts.config is None:
            raise SvdError("--config is required (e.g. pipelines/train/video.yaml)")
        return load_config(opts.config, list(opts.overrides), stage=opts.stage, family=opts.family)
    saved_values = read_yaml(saved)
    cfg = config_from_dict(saved_values, source=saved)
    for key, given in (("stage", opts.stage), ("family", opts.family)):
        if given is not None and given != getattr(cfg, key):
            raise SvdError(f"--resume: {opts.out} is a {getattr(cfg, key)!r} run, not --{key} {given}")
    if opts.config is not None:
        asked = load_config(opts.config, list(opts.overrides), stage=opts.stage, family=opts.family)
    else:
        asked = config_from_dict(saved_values, list(opts.overrides), source=saved)
    changed = _diff(cfg.to_dict(), asked.to_dict()) - set(RESUME_MAY_CHANGE)
    if changed:
        raise SvdError(f"--resume: the config differs from the run's saved config in "
                       f"{', '.join(sorted(changed))}; only {', '.join(RESUME_MAY_CHANGE)} may change "
                       "(leave out --config to resume with the saved one)")
    return asked


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for k in a:
        if isinstance(a[k], dict):
            out |= _diff(a[k], b[k], f"{prefix}{k}.")
        elif a[k] != b[k] and not (isinstance(a[k], (list, tuple)) and list(a[k]) == list(b[k])):
            out.add(prefix + k)
    return out


def check_run_dir(opts: TrainOptions, cfg: TrainConfig, rank: int) -> Path | None:
    """The checkpoint folder --resume continues from (every file it reads checked), else None;
    a new run must not write over one that has checkpoints."""
    if opts.out.exists() and not opts.out.is_dir():
        raise SvdError(f"--out {opts.out} is a file; pass a folder for the run")
    if opts.resume:
        return ckpt.resume_folder(opts.out, rank, cfg.ema.enabled)
    if runs.latest_tag(opts.out) is not None:
        raise SvdError(f"{opts.out} already holds checkpoints: pass --resume to continue, "
                       "or choose a new --out")
    return None


def train(opts: TrainOptions) -> dict:
    """Run one training stage; returns the run summary (also written to RUN_DIR/summary.json)."""
    from svdcli.optional import require
    from svdcli.train.data import check_shards
    from svdcli.train.engine import init_distributed, load_ds_config, setup_env

    cfg = resolve_config(opts)  # user mistakes fail before any process group or model exists
    require("deepspeed", "webdataset", needed_by="svd train")
    family_of(cfg).check_requirements(cfg)
    shards = check_shards(opts.data)
    if opts.init is not None and not opts.resume and not opts.init.exists():
        raise SvdError(f"--init checkpoint not found: {opts.init}")
    info = setup_env(opts.local_rank)
    ds_config = load_ds_config(opts.deepspeed, cfg, info.world_size)
    from svdcli.train.plan.check import check_fits

    check_fits(cfg, ds_config, info, opts.force)     # on a GPU: refuse a run that cannot fit it
    resume_from = check_run_dir(opts, cfg, info.rank)
    init_distributed(info)
    return _train(opts, cfg, info, shards, ds_config, resume_from)


def _train(opts: TrainOptions, cfg: TrainConfig, info, shards, ds_config: dict, resume_from: Path | None) -> dict:
    from svdcli.train.data import DataState, TrainStream, check_latents
    from svdcli.train.ema import EMA
    from svdcli.train.engine import build_engine, zero_stage
    from svdcli.train.runlog import RunLogger

    family = family_of(cfg)
    if info.is_main:
        opts.out.mkdir(parents=True, exist_ok=True)
        runs.config_file(opts.out).write_text(dump_yaml(cfg))
    encoders = family.encoders(cfg, info.device)  # missing weights fail first
    if cfg.data.latents:
        vae = family.training_vae(encoders)
        if vae is None:
            raise SvdError(f"data.latents: family {family.name} trains in pixel space; it reads no stored latents")
        check_latents(shards.good, vae)
    denoiser = family.build(cfg, opts.init if not opts.resume else None)
    engine, _, scheduler = build_engine(denoiser, cfg, ds_config)
    zero3 = zero_stage(ds_config) == 3
    ema = EMA(engine.module, cfg.ema.decay, zero3=zero3) if cfg.ema.enabled else None
    start, data_state = 0, DataState()
    if opts.resume:
        state = ckpt.load(engine, ema, resume_from, info.rank, cfg)
        start, data_state = state["step"], DataState(**state["data"])
        _set_lr(scheduler, cfg)
    stream = TrainStream(shards.good, cfg, info.rank, info.world_size, data_state)
    logger = RunLogger(opts.out, cfg.steps, start, enabled=info.is_main,
                       tensorboard=opts.tensorboard, progress=opts.progress)
    if info.is_main:
        logger.event(start, "start", resume=opts.resume, world_size=info.world_size,
                     zero_stage=zero_stage(ds_config), skipped_shards=shards.skipped,
                     **trainable_summary(engine.module))
        from rich.markup import escape

        for s in shards.skipped:  # a path or a reason may hold [brackets]
            logger.print(f"[yellow]warning:[/] skipped shard {escape(str(s['shard']))}: {escape(str(s['reason']))}")
    validator = None
    if cfg.validation.data:
        from svdcli.train.data import check_shards
        from svdcli.train.validation import Validator

        validator = Validator(cfg, family, encoders, info.device, check_shards(cfg.validation.data).good)
    try:
        with StopOnSigterm(opts.stop_timeout) as stop:
            _loop(engine, scheduler, ema, stream, encoders, cfg, opts, info, logger, start, zero3, stop, validator)
    except NonFiniteLoss as exc:
        kept = runs.latest_tag(opts.out)
        logger.event(exc.step, "nonfinite_loss", message=str(exc), kept=kept)
        where = runs.checkpoints_dir(opts.out) / kept if kept else "none yet (no checkpoint was due)"
        raise NonFiniteLoss(f"{exc}. Last good checkpoint: {where}", exc.step) from None
    finally:
        logger.close()
    return _finish(engine, ema, cfg, opts, info, shards, zero3, stream.state.skipped_samples)


def _set_lr(scheduler, cfg: TrainConfig) -> None:
    """After a resume: the (possibly changed) optim.lr replaces the one the checkpoint restored."""
    from svdcli.train.engine import lr_lambda

    scheduler.base_lrs = [cfg.optim.lr for _ in scheduler.base_lrs]
    for group in scheduler.optimizer.param_groups:
        group["lr"] = cfg.optim.lr * lr_lambda(cfg)(scheduler.last_epoch)


def _loop(engine, scheduler, ema, stream, encoders, cfg, opts, info, logger, start, zero3, stop,
          validator=None) -> None:
    from svdcli.train.runlog import Meter

    meter = Meter()
    samples_per_step = cfg.data.batch_size * cfg.data.grad_accum * info.world_size
    for step in range(start, cfg.steps):
        losses, sigmas = [], []
        for micro in range(cfg.data.grad_accum):
            per_video, sigma = _micro_step(engine, stream, encoders, cfg, info, step, micro)
            losses.append(per_video.detach())
            sigmas.append(sigma)
        if ema is not None:
            ema.update()
        per_video, sigma = torch.cat(losses).float().cpu(), torch.cat(sigmas)
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else None
        meter.add(float(per_video.mean()), per_video.tolist(), sigma.tolist(), grad_norm, samples_per_step)
        done = step + 1
        logger.step(done, f"loss {float(per_video.mean()):.4f}")
        if done % cfg.log_every == 0 or done == cfg.steps:
            record = meter.summary()
            record["loss"] = _mean_over_ranks(record["loss"], info)
            record["skipped_samples"] = int(_sum_over_ranks(stream.state.skipped_samples, info))
            record["lr"] = scheduler.get_last_lr()[0]
            if info.device.startswith("cuda"):     # to set beside `svd train --plan`'s peak
                record["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            record.update(getattr(engine.module, "stats", None) or {})  # a model's own terms (decoder: d_loss, ...)
            logger.log(done, record)
            meter.reset()
        if validator is not None and validator.due(done):
            logger.log(done, validator.run(engine, done))
        due = done % cfg.checkpoint_every == 0 or done == cfg.steps
        stopping = stop.agreed(info)  # every rank stops after the same step
        if due or stopping:
            trainer_state = {"step": done, "data": stream.state.to_dict()}
            path = ckpt.save(engine, ema, cfg, opts.out, done, trainer_state, info.rank,
                             cfg.keep_checkpoints, zero3)
            logger.event(done, "checkpoint", path=str(path))
        if stopping and done < cfg.steps:
            logger.event(done, "terminated", checkpoint=str(path))
            raise Terminated(f"terminated (SIGTERM) after step {done}: checkpoint {path} saved; continue with "
                             "--resume")


def _micro_step(engine, stream, encoders, cfg: TrainConfig, info, step: int, micro: int):
    """Forward, NaN guard and backward of one micro-batch; returns (loss per video, sigma)."""
    family = family_of(cfg)
    video, meta = stream.next()
    gen = step_generator(cfg.seed, step, micro, info.rank)   # independent of when the run was (re)started
    batch = family.prepare(video, meta, encoders, cfg, gen, info.device)
    batch.step = step
    sigma = family.training_sigmas(video.shape[0], cfg, gen)
    noise = torch.randn(batch.x0.shape, generator=gen).to(batch.x0.device)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    device_type = "cuda" if info.device.startswith("cuda") else "cpu"
    with torch.autocast(device_type, dtype=dtype, enabled=cfg.precision == "bf16"):
        per_video = family.loss(engine, batch, sigma, noise)
    loss = per_video.mean()
    _nan_guard(loss, sigma, step, info)
    engine.backward(loss)
    engine.step()
    return per_video, sigma


def _nan_guard(loss: torch.Tensor, sigma: torch.Tensor, step: int, info) -> None:
    """Stop every rank together when any rank's loss is not finite (before it reaches the weights)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=loss.device)
    if info.world_size > 1:
        torch.distributed.all_reduce(bad)
    if bad.item():
        raise NonFiniteLoss(
            f"loss is {loss.item()} at step {step + 1} (sigmas {[round(s, 4) for s in sigma.tolist()]}); "
            "training stopped before this step reached the weights; continue from the last good "
            "checkpoint with --resume, e.g. with a lower optim.lr or optim.grad_clip", step + 1)


def _sum_over_ranks(value: float, info) -> float:
    if info.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    torch.distributed.all_reduce(t)
    return float(t)


def _mean_over_ranks(value: float, info) -> float:
    return _sum_over_ranks(value, info) / info.world_size


def trainable_summary(model: torch.nn.Module) -> dict:
    """Parameter counts of the full model; ZeRO-3 keeps only a shard on each rank (p.numel() is
    then 0) and records the full size as `ds_numel`."""
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return {"parameters": sum(n for n, _ in sizes), "trainable": sum(n for n, t in sizes if t)}


def weights_digest(engine, cfg: TrainConfig, zero3: bool) -> str:
    """sha256 of the live weights, to check that every rank holds the same model."""
    state = ckpt.export_state(None, engine.module, cfg, zero3)
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].numpy().tobytes())
    return h.hexdigest()


def _finish(engine, ema, cfg, opts, info, shards, zero3, skipped_samples: int) -> dict:
    digest = weights_digest(engine, cfg, zero3)
    skipped_samples = int(_sum_over_ranks(skipped_samples, info))
    digests = [None] * info.world_size
    torch.distributed.all_gather_object(digests, digest)
    summary = {"steps": cfg.steps, "family": cfg.family, "stage": cfg.stage, "world_size": info.world_size,
               "skipped_shards": len(shards.skipped), "skipped": shards.skipped, "skipped_samples": skipped_samples,
               "rank_weight_digests": digests, "ranks_agree": len(set(digests)) == 1,
               "checkpoint": str(runs.checkpoints_dir(opts.out) / (runs.latest_tag(opts.out) or ""))}
    if info.is_main:
        (opts.out / runs.SUMMARY).write_text(json.dumps(summary, indent=1))
    return {**summary, "rank": info.rank}
