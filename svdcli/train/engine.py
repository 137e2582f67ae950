"""The DeepSpeed engine: process-group setup, the DeepSpeed JSON config, `deepspeed.initialize`.

The only module (with the rest of `svdcli.train`) that imports deepspeed. Runs the same way
launched by `deepspeed` / `torchrun` on GPUs (NCCL) and as one or more CPU processes (gloo).
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from svdcli.errors import SvdError
from svdcli.train.config import TrainConfig


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: str          # "cuda:N" or "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_env(local_rank: int | None = None) -> DistInfo:
    """Fill the env:// rendezvous variables for an unlaunched single process; read them otherwise."""
    import torch

    if "RANK" not in os.environ:  # not started by torchrun / deepspeed: a single process
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    if local_rank is not None and local_rank >= 0:
        os.environ["LOCAL_RANK"] = str(local_rank)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        device = "cpu"
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def _skip_cpu_shm_op() -> None:
    """Do not JIT-build DeepSpeed's CPU shared-memory all-reduce (60-90 s on a fresh machine).

    DeepSpeed's TorchBackend builds it whenever the op is marked compatible; it only speeds up
    CPU collectives, which gloo does well enough for development runs. `__compatible_ops__`
    is a module-level dict that DeepSpeed caches and reads at that point.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_distributed(info: DistInfo) -> None:
    import deepspeed
    import torch

    if info.device == "cpu":
        _skip_cpu_shm_op()
    backend = "nccl" if info.device.startswith("cuda") else "gloo"
    # Initialised once per process: DeepSpeed caches its groups, so a second run in the same
    # process (tests, notebooks) reuses the first one's group rather than a destroyed one.
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def load_ds_config(path: str | Path | None, cfg: TrainConfig, world_size: int) -> dict:
    """Read a DeepSpeed JSON and set what the training config owns (batch, precision, clipping).

    The training config is the one source of truth for batch sizes, precision and clipping, so
    the JSON keeps only the ZeRO stage and engine tuning; a JSON value that disagrees is
    overwritten here rather than silently winning.
    """
    ds: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a JSON file" if path.is_dir() else "not found"
            raise SvdError(f"DeepSpeed config {path} {what} (shipped: pipelines/deepspeed/zero{{1,2,3}}.json)")
        try:
            ds = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SvdError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(ds, dict) or not isinstance(ds.get("zero_optimization", {}), dict):
            raise SvdError(f"{path}: expected a JSON object such as {{\"zero_optimization\": {{\"stage\": 2}}}}")
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two values below
    ds["train_micro_batch_size_per_gpu"] = cfg.data.batch_size
    ds["gradient_accumulation_steps"] = cfg.data.grad_accum
    ds["gradient_clipping"] = cfg.optim.grad_clip
    # precision bf16 = torch.autocast(bfloat16) around the forward with fp32 master weights
    # (bf16-mixed). DeepSpeed's own bf16 mode would cast the weights to bf16, which the UNet's
    # fp32 GroupNorm (as sgm's) and the EMA should not see.
    ds["bf16"] = {"enabled": False}
    ds.pop("fp16", None)
    ds.pop("torch_autocast", None)
    ds.setdefault("zero_optimization", {"stage": 0})
    ds["steps_per_print"] = 10**9      # our logger reports; keep DeepSpeed's quiet
    ds["wall_clock_breakdown"] = False
    # A torch optimizer is passed in (no JIT-built fused/CPU Adam); ZeRO accepts AdamW as tested,
    # bitsandbytes' 8-bit AdamW when told to, and an offloaded optimizer only when not forced to
    # DeepSpeed's own CPU Adam (which would be JIT-built).
    ds.pop("optimizer", None)
    if cfg.optim.name != "adamw":
        ds["zero_allow_untested_optimizer"] = True
    ds.setdefault("zero_force_ds_cpu_optimizer", False)
    ds.pop("scheduler", None)
    stage = ds["zero_optimization"].get("stage", 0)
    if str(stage) not in ("0", "1", "2", "3"):  # only a file sets it (the default is 0)
        raise SvdError(f"{path}: zero_optimization.stage must be 0, 1, 2 or 3, not {stage!r}")
    return ds


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up to optim.lr over warmup_steps, then constant (as sgm's LambdaLinearScheduler)."""
    warm = cfg.optim.warmup_steps

    def f(step: int) -> float:
        return min(1.0, (step + 1) / warm) if warm > 0 else 1.0

    return f


def build_engine(model, cfg: TrainConfig, ds_config: dict):
    """deepspeed.initialize over the trainable parameters with AdamW (`optim.name`) and the warm-up schedule."""
    import deepspeed
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SvdError("nothing to train: every parameter is frozen (check freeze_spatial / lora)")
    o = cfg.optim
    optimizer = _optimizer_class(o.name)(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                         weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
        model_parameters=params, dist_init_required=False)
    return engine, optimizer, scheduler


def _optimizer_class(name: str):
    """torch's AdamW, or bitsandbytes' 8-bit AdamW (optional: `pip install 'svdcli[lowmem]'`)."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError:
        raise SvdError("optim.name adamw8bit needs bitsandbytes: pip install 'svdcli[lowmem]'") from None
    return bitsandbytes.optim.AdamW8bit


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))
