"""A run's plan: per-GPU peak memory split by what holds it, and FLOPs per step.

    plan = make_plan(cfg, ds_config, gpus=8)        # cfg: TrainConfig, ds_config: load_ds_config's dict
    plan.peak, plan.fits(Target(gpus=8, memory_gib=80))

The network and the frozen encoders are built by the family on the meta device (no weights,
nothing allocated); one training step is traced at the run's shapes (svdcli.train.plan.trace);
the model states follow DeepSpeed's layout (svdcli.train.plan.memory). A step has three phases
and the peak is the largest of them:

    prepare    model states + encoder weights + the encoders' activations (batch preparation)
    step       model states + encoder weights + forward/backward: activations and gradients
               as the ZeRO stage holds them (ZeRO-3: plus the layers it gathers)
    update     model states + encoder weights + gradients + the optimizer's temporaries
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch

from svdcli.train.plan.memory import Layout, ModelStates, Params, model_states
from svdcli.train.plan.trace import StepTrace, optimizer_peak, trace_step

GiB = 2**30
RESERVED_GIB = 1.0        # CUDA context, NCCL buffers: not in the allocator's count
USABLE_FRACTION = 0.95    # the caching allocator's fragmentation and kernel workspaces


@dataclass(frozen=True)
class Target:
    """The GPUs a run is planned for: how many, and the memory of each (GiB; None: unknown)."""

    gpus: int = 1
    memory_gib: float | None = None

    @property
    def usable(self) -> float:
        """Bytes a run may plan to allocate on one GPU."""
        return (self.memory_gib * USABLE_FRACTION - RESERVED_GIB) * GiB if self.memory_gib else float("inf")


@dataclass
class Plan:
    """What one GPU holds at each phase of a step of this run, in bytes."""

    cfg: object
    layout: Layout
    params: Params
    states: ModelStates
    encoder_weights: int
    trace: StepTrace
    phases: dict[str, int]
    split: dict[str, int]                 # at the peak phase: parameters, gradients, ...
    optimizer_temporaries: int
    checkpointing_activations: dict[bool, int] = field(default_factory=dict)   # with / without

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    def fits(self, target: Target) -> bool:
        return self.peak <= target.usable

    def splits(self) -> dict[str, dict[str, int]]:
        """The split of every phase (parameters, gradients, optimizer states, ...)."""
        return _phases(self.cfg, self.layout, self.params, self.states, self.encoder_weights, self.trace,
                       self.optimizer_temporaries, all_splits=True)

    @property
    def model_flops(self) -> int:
        """FLOPs of an optimizer step per GPU as MFU counts them: 3 x forward per micro-batch."""
        return 3 * self.trace.forward_flops * self.cfg.data.grad_accum

    @property
    def executed_flops(self) -> int:
        """Per GPU per optimizer step as run: recomputation and the frozen encoders included."""
        return (self.trace.flops + self.trace.prepare_flops) * self.cfg.data.grad_accum


_TRACES: dict[str, StepTrace] = {}
# config keys a step's trace does not depend on (the layout and the optimizer enter after it)
NOT_TRACED = ("optim", "ema", "steps", "seed", "noise", "checkpoint_every", "log_every", "keep_checkpoints")


def make_plan(cfg, ds_config: dict, gpus: int = 1, device: str = "cuda",
              compare_checkpointing: bool = False) -> Plan:
    """The plan of `cfg` (a TrainConfig) under `ds_config` on `gpus` data-parallel GPUs.

    `device` "cuda" plans a GPU run; "cpu" reproduces a CPU run (its autocast and attention
    kernels), which is how the planner is checked against measured memory.
    `compare_checkpointing` also traces the step with activation checkpointing flipped."""
    from svdcli.train.config import family_of

    family = family_of(cfg)
    layout = Layout.from_ds_config(ds_config, gpus, cfg.optim.name)
    trace, params, encoder_weights, shapes = _trace(family, cfg, device)
    states = model_states(params, layout, cfg.ema.enabled)
    _, temporaries = optimizer_peak(shapes, cfg, layout, device)
    phases, split = _phases(cfg, layout, params, states, encoder_weights, trace, temporaries)
    plan = Plan(cfg=cfg, layout=layout, params=params, states=states, encoder_weights=encoder_weights,
                trace=trace, phases=phases, split=split, optimizer_temporaries=temporaries)
    plan.checkpointing_activations[cfg.activation_checkpointing] = trace.activations
    if compare_checkpointing:
        other = dataclasses.replace(cfg, activation_checkpointing=not cfg.activation_checkpointing)
        plan.checkpointing_activations[other.activation_checkpointing] = _trace(family, other, device)[0].activations
    return plan


def _trace(family, cfg, device: str) -> tuple[StepTrace, Params, int, list]:
    """The step's trace (cached per config: the layout does not change it), the network's
    element counts, the encoders' weight bytes and the trainable shapes."""
    with torch.device("meta"):
        denoiser = family.build(cfg)
        encoders = family.encoders(cfg, "meta")
    # what a build makes outside the device context (legacy torch.Tensor(...) buffers) moves
    # to the device as DeepSpeed moves the model there
    for module in [denoiser, *_modules(encoders)]:
        module.to("meta")
    params = Params.of(denoiser)
    shapes = [tuple(p.shape) for p in denoiser.parameters() if p.requires_grad]
    shape = {k: v for k, v in cfg.to_dict().items() if k not in NOT_TRACED}
    key = json.dumps([device, shape], sort_keys=True, default=str)
    if key not in _TRACES:
        _TRACES[key] = trace_step(family, cfg, denoiser, encoders, device=device)
    return _TRACES[key], params, module_bytes(encoders), shapes


def module_bytes(obj) -> int:
    """Bytes of the parameters and buffers of every module in `obj` (a module, a dataclass or a
    container of them, or None), each counted once."""
    seen, total = set(), 0
    for m in _modules(obj):
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def _modules(obj) -> list[torch.nn.Module]:
    if isinstance(obj, torch.nn.Module):
        return [obj]
    if dataclasses.is_dataclass(obj):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, (list, tuple)):
        return [m for v in obj for m in _modules(v)]
    return [v for v in vars(obj).values() if isinstance(v, torch.nn.Module)] if hasattr(obj, "__dict__") else []


def _phases(cfg, layout: Layout, params: Params, states: ModelStates, encoders: int, trace: StepTrace,
            temporaries: int, all_splits: bool = False):
    """Bytes of each phase and the split of the largest one (`all_splits`: every phase's split)."""
    keep = layout.zero <= 1                          # gradients stay in .grad until the update
    deepspeed = states.grad_partition + states.buckets
    step, grads = trace.step_peak(keep, states.buckets, states.grad_partition, 4 * layout.reduce_bucket)
    if cfg.data.grad_accum > 1:                      # later micro-batches start with every gradient held
        grads = (4 * params.trainable if keep else 0) + deepspeed
        step = trace.activations + grads
    at_update = 4 * params.trainable if keep else states.grad_partition   # ZeRO-3's: in the model states
    if layout.zero == 1:
        at_update += 4 * layout.partition(params.trainable)   # the flat fp32 partition of the gradients
    base = {"parameters": states.weights, "optimizer states": states.optimizer + states.master,
            "EMA": states.ema, "frozen encoders": encoders}
    splits = {
        "prepare": {**base, "frozen encoders": encoders + trace.prepare_peak, "gradients": states.grad_buffers},
        "step": {**base, "parameters": states.weights + states.gathered, "gradients": grads + states.grad_buffers,
                 "activations": step - grads},
        "update": {**base, "gradients": at_update + states.grad_buffers,
                   "optimizer states": base["optimizer states"] + temporaries},
    }
    if all_splits:
        return splits
    phases = {name: sum(split.values()) for name, split in splits.items()}
    return phases, splits[max(phases, key=phases.get)]
