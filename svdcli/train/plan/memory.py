"""Model states per GPU as `svd train` holds them under each ZeRO stage: weights, gradients,
optimizer states, the fp32 master partition, the EMA shadows and DeepSpeed's reduction buffers.

`svd train` keeps fp32 weights and runs the forward under bf16 autocast (docs/training.md), so
with P trainable and F frozen elements and N data-parallel ranks a GPU holds, in bytes:

    weights      4 (P + F)              ZeRO-3: 4 (P + F) / N, whole copies of the parameters
                                        below stage3_param_persistence_threshold, and the
                                        layers it gathers (largest module + prefetch bucket)
    gradients    4 P (in .grad)         ZeRO-1/2: reduction buckets (from the first gradient)
                                        and, ZeRO-2, a 4 P / N partition (from the first
                                        reduction); ZeRO-3: both made with the engine
    master       4 P / N (ZeRO-1/2: DeepSpeed clones its fp32 partition; ZeRO-3 updates the
                 fp32 weights in place)
    optimizer    AdamW 8 P (ZeRO-0), 8 P / N (ZeRO >= 1); 8-bit AdamW (bitsandbytes) 2 bytes
                 per element plus a float32 absmax per 256-element block for each of its 2 states
    EMA          4 P, never partitioned (svdcli.train.ema keeps full fp32 shadows)

With CPU offload of the optimizer (ZeRO-Offload) master, states and the gradient partition live
in the host's memory instead and the GPU keeps a gradient staging buffer of the largest
parameter. `bytes_per_weight=2` gives DeepSpeed's mixed-precision layout (16-bit weights and
gradients, fp32 master and gradient partition), for which `zero2_states` equals DeepSpeed's own
`estimate_zero2_model_states_mem_needs` (tests/test_plan_memory.py). The trace
(svdcli.train.plan.trace) adds what a step creates: activations, progressive gradients, an
optimizer update's temporaries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

OPTIMIZERS = ("adamw", "adamw8bit")
BNB_BLOCK = 256          # bitsandbytes' blockwise quantisation: one fp32 absmax per block per state


@dataclass(frozen=True)
class Params:
    """Element counts of a network (built on the meta device): what trains and what is frozen."""

    trainable: int
    frozen: int
    weight_bytes: int              # bytes of all weights as stored (fp32: 4 per element)
    largest: int                   # elements of the largest parameter tensor
    largest_module: int            # elements of the largest module's own parameters (ZeRO-3 gathers modules)
    sizes: tuple[int, ...] = ()    # elements of every parameter tensor

    @classmethod
    def of(cls, module: nn.Module) -> "Params":
        params = list(module.parameters())
        own = [sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()]
        return cls(trainable=sum(p.numel() for p in params if p.requires_grad),
                   frozen=sum(p.numel() for p in params if not p.requires_grad),
                   weight_bytes=sum(p.numel() * p.element_size() for p in params),
                   largest=max((p.numel() for p in params), default=0), largest_module=max(own, default=0),
                   sizes=tuple(p.numel() for p in params))


@dataclass(frozen=True)
class Layout:
    """How DeepSpeed runs the step: ZeRO stage, ranks, offload, buffer sizes (DeepSpeed's defaults
    where the JSON is silent), and the optimizer."""

    zero: int = 0
    ranks: int = 1
    offload_optimizer: bool = False
    reduce_bucket: int = 500_000_000
    overlap_comm: bool = False
    prefetch_bucket: int = 50_000_000
    persistence_threshold: int = 100_000
    optimizer: str = "adamw"

    @classmethod
    def from_ds_config(cls, ds: dict, ranks: int, optimizer: str = "adamw") -> "Layout":
        z = ds.get("zero_optimization", {}) or {}
        stage = int(z.get("stage", 0))
        offload = (z.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme")
        overlap = z.get("overlap_comm")
        return cls(zero=stage, ranks=ranks, offload_optimizer=offload and stage >= 1,
                   reduce_bucket=int(float(z.get("reduce_bucket_size", 5e8))),
                   overlap_comm=bool(stage == 3 if overlap is None else overlap),
                   prefetch_bucket=int(float(z.get("stage3_prefetch_bucket_size", 5e7))),
                   persistence_threshold=int(float(z.get("stage3_param_persistence_threshold", 1e5))),
                   optimizer=optimizer)

    def partition(self, elements: int) -> int:
        """Elements of one rank's share (ZeRO >= 1), as DeepSpeed splits a flat group."""
        return math.ceil(elements / self.ranks) if self.zero >= 1 else elements


@dataclass
class ModelStates:
    """Bytes per GPU that exist across steps (host: per process, in CPU memory)."""

    weights: int
    gathered: int          # ZeRO-3: the largest module and the prefetch bucket, gathered in fwd/bwd
    master: int
    optimizer: int
    ema: int
    grad_partition: int    # ZeRO-2: made at the first reduction, held through the update
    buckets: int           # ZeRO-1/2: reduction buffers, made at the first gradient
    grad_buffers: int = 0  # ZeRO-3: partition and bucket, made with the engine and kept
    host: int = 0

    @property
    def static(self) -> int:
        """Held through a whole step."""
        return self.weights + self.master + self.optimizer + self.ema + self.grad_buffers


def optimizer_state_bytes(elements: int, optimizer: str) -> int:
    """AdamW: m and v in fp32; bitsandbytes' 8-bit AdamW: two uint8 states and their absmax."""
    if optimizer == "adamw8bit":
        return 2 * elements + 2 * 4 * math.ceil(elements / BNB_BLOCK)
    return 8 * elements


def model_states(params: Params, layout: Layout, ema: bool, bytes_per_weight: int = 4) -> ModelStates:
    """The model states of `params` trained under `layout` (see the module docstring)."""
    n, z, w = layout.ranks, layout.zero, bytes_per_weight
    weights, gathered = (params.trainable + params.frozen) * w, 0
    if z == 3:
        persistent = sum(k for k in params.sizes if k < layout.persistence_threshold)
        weights = math.ceil(weights / n) + persistent * w
        gathered = (params.largest_module + layout.prefetch_bucket) * w
    share = layout.partition(params.trainable)
    master = 4 * share if z in (1, 2) or (z == 3 and w != 4) else 0
    states = optimizer_state_bytes(share, layout.optimizer)
    grad_partition = (w + (4 if w != 4 else 0)) * share if z >= 2 else 0
    buckets = (2 if layout.overlap_comm and z < 3 else 1) * layout.reduce_bucket * 4 if z >= 1 else 0
    host = 0
    if layout.offload_optimizer:      # + DeepSpeed's copy-back buffer of the partition, in the weights' dtype
        host = master + states + grad_partition + w * share
        master, states, grad_partition = 0, 0, 0
        buckets += params.largest * w          # DeepSpeed's staging buffer for offloaded gradients
    grad_buffers = 0
    if z == 3:
        grad_buffers, grad_partition, buckets = grad_partition + buckets, 0, 0
    return ModelStates(weights=weights, gathered=gathered, master=master, optimizer=states,
                       ema=4 * params.trainable if ema else 0, grad_partition=grad_partition, buckets=buckets,
                       grad_buffers=grad_buffers, host=host)


def zero2_states(params: Params, layout: Layout, bytes_per_weight: int = 4) -> int:
    """Weights, gradient partition, master and AdamW states of ZeRO-2 (no EMA, no buffers): the
    quantity DeepSpeed's `estimate_zero2_model_states_mem_needs` estimates for 16-bit weights."""
    s = model_states(params, Layout(zero=2, ranks=layout.ranks, offload_optimizer=layout.offload_optimizer),
                     ema=False, bytes_per_weight=bytes_per_weight)
    return s.weights + s.master + s.optimizer + s.grad_partition
