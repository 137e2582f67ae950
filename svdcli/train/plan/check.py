"""Before `svd train` starts: refuse a run that its plan says cannot fit the GPU it would use.

Runs after the config and the DeepSpeed JSON are read and before any process group, model or
data loader exists, so a run that would run out of memory fails in seconds, with the numbers
and the cheapest change that fits, instead of after the data warm-up. Without a GPU (CPU runs)
nothing is checked.
"""
from __future__ import annotations

import sys

from svdcli.errors import SvdError


def visible_gpu(local_rank: int) -> tuple[str, float] | None:
    """(name, memory in GiB) of the GPU this process would train on, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(local_rank)
    return f"{props.name} (cuda:{local_rank})", props.total_memory / 2**30


def check_fits(cfg, ds_config: dict, info, force: bool = False) -> None:
    """Raise SvdError when the plan of `cfg` on `info.world_size` GPUs does not fit this GPU;
    with `force`, warn (rank 0) and go on."""
    gpu = visible_gpu(info.local_rank)
    if gpu is None:
        return
    from svdcli.train.plan.fit import cheapest_fit
    from svdcli.train.plan.plan import Target, make_plan
    from svdcli.train.plan.report import refusal

    from svdcli.train.plan.trace import NotTraceable

    name, memory = gpu
    target = Target(gpus=info.world_size, memory_gib=memory)
    try:
        plan = make_plan(cfg, ds_config, info.world_size)
    except NotTraceable as exc:
        if info.rank == 0:
            print(f"warning: memory not checked before the start: {exc}", file=sys.stderr)
        return
    if plan.fits(target):
        return
    if force:
        if info.rank == 0:
            print(f"warning: --force: {refusal(plan, target, None, name)}", file=sys.stderr)
        return
    raise SvdError(refusal(plan, target, cheapest_fit(cfg, ds_config, target), name))
