"""Know before launching: a training run's per-GPU memory and FLOPs, measured by tracing its real
network at its real shapes on the meta device (nothing allocated), and whether it fits.

    plan.py      make_plan(cfg, ds_config, gpus): phases, split, FLOPs; Target (GPU count, memory)
    trace.py     one step traced through the Family protocol (prepare, loss, backward, update)
    live.py      LiveBytes: live and peak bytes of every storage a traced op makes, and FLOPs
    autocast.py  torch.autocast's casting rules replayed on meta tensors
    memory.py    model states under DeepSpeed's ZeRO stages, offload and 8-bit AdamW
    fit.py       the cheapest change that makes a run fit
    report.py    the text of `svd train --plan` and of a refused run
    check.py     what `svd train` runs before it starts: refuse a run that cannot fit the visible GPU
See docs/training.md ("Which GPU for which run").
"""
