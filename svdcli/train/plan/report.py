"""The plan as text: what `svd train --plan` prints and what a refused run says."""
from __future__ import annotations

from svdcli.train.plan.plan import GiB, RESERVED_GIB, USABLE_FRACTION, Plan, Target

COMMON_GPUS_GIB = (24, 40, 48, 80, 141)   # RTX 4090 / A10 / L4-class, A100-40, L40S / A6000, A100 / H100, H200
BF16_PEAK_TFLOPS = {"H100/H200": 989.0, "A100": 312.0}   # dense bf16, no sparsity
ROWS = ("parameters", "gradients", "optimizer states", "EMA", "activations", "frozen encoders")
PHASES = {"prepare": "batch preparation", "step": "forward + backward", "update": "optimizer update"}


def gib(n: float) -> str:
    return f"{n / GiB:.1f}"


def describe(plan: Plan) -> str:
    cfg, lay, p = plan.cfg, plan.layout, plan.params
    own = cfg.family_config
    model = getattr(own, "model", "")
    trained = "LoRA" if cfg.lora.rank else ("temporal layers" if getattr(own, "freeze_spatial", False) else "")
    zero = f"ZeRO-{lay.zero}" + (" + optimizer in CPU memory" if lay.offload_optimizer else "")
    return (f"{cfg.family} {cfg.stage}{f', model {model}' if model else ''}: {cfg.frames} frames x "
            f"{cfg.data.height}x{cfg.data.width}, batch {cfg.data.batch_size} x {cfg.data.grad_accum} accumulation, "
            f"{cfg.precision}, {cfg.optim.name}, {zero} on {lay.ranks} GPU(s), activation checkpointing "
            f"{'on' if cfg.activation_checkpointing else 'off'}, EMA {'on' if cfg.ema.enabled else 'off'}; "
            f"{p.trainable / 1e6:,.1f}M of {(p.trainable + p.frozen) / 1e6:,.1f}M parameters train"
            f"{f' ({trained})' if trained else ''}")


def render(plan: Plan, target: Target | None = None) -> list[str]:
    """The plan's lines: the split per phase, activations, encoders, FLOPs, and what fits."""
    lines = [f"plan: {describe(plan)}", "",
             f"per-GPU memory, GiB        {'   '.join(f'{PHASES[k]:>18}' for k in plan.phases)}"]
    splits = plan.splits()
    for row in ROWS:
        lines.append(f"  {row:<24}" + "   ".join(f"{gib(splits[k].get(row, 0)):>18}" for k in plan.phases))
    lines.append(f"  {'total':<24}" + "   ".join(f"{gib(v):>18}" for v in plan.phases.values()))
    lines.append(f"peak: {gib(plan.peak)} GiB per GPU, in the {PHASES[plan.peak_phase]}")
    lines += _activations(plan) + _encoders(plan) + _host(plan) + _flops(plan) + [""] + verdict(plan, target)
    return lines


def _activations(plan: Plan) -> list[str]:
    acts = plan.checkpointing_activations
    parts = [f"{gib(v)} GiB {'with' if k else 'without'} activation checkpointing" for k, v in sorted(acts.items())]
    top = ", ".join(f"{op} {gib(n)}" for op, n in list(plan.trace.saved_by_op.items())[:4])
    return [f"activations (forward + backward peak, batch {plan.cfg.data.batch_size}): {'; '.join(parts)}",
            f"  kept at the end of the forward: {gib(plan.trace.saved)} GiB (largest: {top})"]


def _encoders(plan: Plan) -> list[str]:
    if not plan.encoder_weights and not plan.trace.prepare_peak:
        return []
    latents = " (stored latents: the VAE encodes the conditioning frame only)" if plan.cfg.data.latents else ""
    return [f"frozen encoders: {gib(plan.encoder_weights)} GiB of weights; preparing a batch adds "
            f"{gib(plan.trace.prepare_peak)} GiB{latents}"]


def _host(plan: Plan) -> list[str]:
    if not plan.states.host:
        return []
    per_node = min(plan.layout.ranks, 8)
    return [f"CPU memory for the offloaded optimizer: {gib(plan.states.host)} GiB per GPU "
            f"({gib(plan.states.host * per_node)} GiB on a node of {per_node})"]


def _flops(plan: Plan) -> list[str]:
    model, executed = plan.model_flops, plan.executed_flops
    bounds = ", ".join(f"{name} {model / (tf * 1e12):.2f} s" for name, tf in BF16_PEAK_TFLOPS.items())
    return [f"FLOPs per optimizer step and GPU: {model / 1e12:,.1f} TFLOP model (3 x forward, what MFU counts), "
            f"{executed / 1e12:,.1f} TFLOP executed (recomputation and encoders included)",
            f"  step time at 100% of dense bf16 peak (a lower bound): {bounds}"]


def verdict(plan: Plan, target: Target | None) -> list[str]:
    """Whether the plan fits the target GPU, or each common GPU size when none is given."""
    rule = (f"(a GPU of M GiB gives a run {USABLE_FRACTION:.0%} of M - {RESERVED_GIB:g} GiB: CUDA context, "
            "NCCL, allocator fragmentation and kernel workspaces take the rest)")
    if target is None or target.memory_gib is None:
        sizes = ", ".join(f"{m} GiB {'yes' if plan.fits(Target(plan.layout.ranks, m)) else 'no'}"
                          for m in COMMON_GPUS_GIB)
        return [f"fits: {sizes} {rule}"]
    usable = Target(target.gpus, target.memory_gib).usable
    ok = plan.fits(target)
    return [f"fits {target.gpus} x {target.memory_gib:g} GiB: {'yes' if ok else 'no'} "
            f"({gib(plan.peak)} of {gib(usable)} GiB usable) {rule}"]


def refusal(plan: Plan, target: Target, fit, device_name: str) -> str:
    """One message for a run that does not fit its GPU: the numbers and the cheapest change."""
    split = ", ".join(f"{k} {gib(v)}" for k, v in plan.split.items() if v >= 0.05 * GiB)
    msg = (f"this run needs {gib(plan.peak)} GiB per GPU in the {PHASES[plan.peak_phase]} ({split}) but "
           f"{device_name} has {target.memory_gib:.1f} GiB ({gib(target.usable)} usable)")
    if fit is not None:
        msg += (f"; cheapest change that fits: {fit.flags()} (plan {gib(fit.plan.peak)} GiB; "
                + "; ".join(f"{c.name}: {c.cost}" for c in fit.changes) + ")")
    else:
        msg += ("; no change that keeps the experiment fits: use more GPUs with ZeRO-3, fewer frames, a lower "
                "resolution, or train only the temporal layers (freeze_spatial) or LoRA")
    return msg + ". `svd train --plan ...` shows the whole plan; --force starts the run anyway"
