"""One training step of the real network at the real shapes, traced on the meta device.

`trace_step` runs what `svd train`'s step runs, through the Family protocol only: a loader-shaped
batch, `family.prepare` (the frozen encoders), `family.training_sigmas`, `family.loss` under
(emulated) autocast and the backward pass. No tensor has data: `LiveBytes` follows what each
phase creates and releases, and counts the matmul, convolution and attention FLOPs.
`optimizer_peak` runs the update DeepSpeed would run the same way. What exists before a step
(weights, frozen encoders, optimizer states) is not in these numbers: svdcli.train.plan.memory
counts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from svdcli.errors import SvdError
from svdcli.train.plan.autocast import EmulatedAutocast
from svdcli.train.plan.live import CUDA_BLOCK, LiveBytes
from svdcli.train.plan.memory import Layout


@dataclass
class StepTrace:
    """Bytes one micro-step creates on the device (peaks above what was live before the phase).

    Gradients are released as they are accumulated; `timeline` (live bytes after every op of
    forward and backward) and `grads` ((op index, bytes) of each accumulated gradient) let
    `step_peak` put them back as each ZeRO stage holds them, without tracing again."""

    prepare_peak: int               # batch preparation: the frozen encoders' activations
    batch: int                      # what prepare leaves for the step (x0, conditioning)
    saved: int                      # live at the loss: the activations kept for the backward pass
    saved_by_op: dict[str, int]     # those bytes by the op that made them (convolution, attention, ...)
    timeline: np.ndarray            # (ops,) int64 live bytes after each op, batch included
    grads: list[tuple[int, int]]    # (op index, bytes) of every gradient as autograd accumulated it
    flops: int                      # forward + backward as executed (recomputation included)
    forward_flops: int              # the forward alone (model FLOPs = 3 x this)
    prepare_flops: int

    @property
    def activations(self) -> int:
        """Peak of the step without any gradient held (batch included)."""
        return int(self.timeline.max()) if len(self.timeline) else self.batch

    def step_peak(self, keep_grads: bool, buckets: int = 0, partition: int = 0,
                  reduce_after: int = 0) -> tuple[int, int]:
        """(peak bytes, gradient bytes at that peak) when gradients stay in `.grad` (`keep_grads`),
        and DeepSpeed's reduction `buckets` appear at the first gradient and its gradient
        `partition` at the first reduction, once `reduce_after` bytes of gradients have come
        (a full bucket), or at the last gradient."""
        held = np.zeros_like(self.timeline)
        if self.grads:
            at = np.array([i for i, _ in self.grads])
            n = np.array([b for _, b in self.grads])
            if keep_grads:
                np.add.at(held, at, n)
                held = np.cumsum(held)
            held[at.min():] += buckets
            full = np.flatnonzero(np.cumsum(n) >= reduce_after)
            held[at[full[0]] if len(full) else at.max():] += partition
        total = self.timeline + held
        i = int(total.argmax())
        return int(total[i]), int(held[i])


def synthetic_batch(cfg, device: str = "meta"):
    """A batch shaped like `svdcli.shards.loader.make_loader`'s: video (B, T, 3, H, W) float32 in
    [-1, 1] and its conditioning (ids on the CPU, captions, stored latents with data.latents)."""
    d = cfg.data
    b, t = d.batch_size, cfg.frames
    video = torch.empty(b, t, 3, d.height, d.width, device=device)
    ids = torch.zeros(b, dtype=torch.long)
    meta = {"fps_id": ids + 6, "motion_bucket_id": ids + 127, "frame_start": ids, "frame_stride": ids + 1,
            "skipped": ids, "caption": ["a caption of typical length for a video clip"] * b,
            "clip_id": ["clip"] * b, "key": ["key"] * b}
    if d.latents:
        meta["latents"] = torch.empty(b, t, 4, d.height // 8, d.width // 8, dtype=torch.float16, device=device)
    return video, meta


def trace_step(family, cfg, denoiser, encoders, *, device: str = "cuda") -> StepTrace:
    """Trace one micro-step of `denoiser` (built on the meta device) with `cfg`'s batch.

    `device` picks the autocast policy, the attention kernel and the allocator's rounding:
    "cuda" for GPU plans, "cpu" to reproduce a CPU run.
    """
    try:
        return _trace_step(family, cfg, denoiser, encoders, device)
    except RuntimeError as exc:
        if "meta" not in str(exc):
            raise
        raise NotTraceable(f"family {cfg.family} stage {cfg.stage}: its step cannot be traced without data "
                           f"({str(exc).splitlines()[0]}), so it has no plan") from None


class NotTraceable(SvdError):
    """A step that reads tensor values (e.g. logs a loss with .item() inside the forward)."""


def _trace_step(family, cfg, denoiser, encoders, device: str) -> StepTrace:
    live = Timeline(round_to=CUDA_BLOCK if device == "cuda" else 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in denoiser.parameters() if p.requires_grad]
    hooks = [p.register_post_accumulate_grad_hook(live.hand_off) for p in params]
    try:
        with live:
            video, meta = synthetic_batch(cfg)
            live.category = "encoders"
            batch = family.prepare(video, meta, encoders, cfg, gen, "meta")
            prepare_flops, prepare_peak = live.flops, live.peak
            del video
            live.rename("encoders", "batch")     # what prepare leaves is the step's input
            live.category = "activations"
            batch_bytes = live.reset_peak()
            live.record = True
            sigma = family.training_sigmas(cfg.data.batch_size, cfg, gen)
            noise = torch.randn(batch.x0.shape, generator=gen).to("meta")
            saved, fwd, by_op = _forward_backward(live, family, cfg, denoiser, batch, sigma, noise, device)
            live.record = False
    finally:
        for h in hooks:
            h.remove()
    return StepTrace(prepare_peak=prepare_peak, batch=batch_bytes, saved=saved, saved_by_op=by_op,
                     timeline=np.array(live.history, dtype=np.int64), grads=live.grads,
                     flops=live.flops - prepare_flops, forward_flops=fwd - prepare_flops, prepare_flops=prepare_flops)


class Timeline(LiveBytes):
    """LiveBytes that keeps the total after every op while `record` is on, and takes every
    accumulated gradient (its size and when) and releases it."""

    def __init__(self, round_to: int = 1):
        super().__init__(round_to=round_to)
        self.record = False
        self.history: list[int] = []
        self.grads: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.record:
            self.history.append(self.total)
        return out

    def hand_off(self, p: torch.Tensor) -> None:
        n = -(-p.grad.untyped_storage().nbytes() // self.round_to) * self.round_to
        self.grads.append((max(len(self.history) - 1, 0), n))
        p.grad = None


def _forward_backward(live: LiveBytes, family, cfg, denoiser, batch, sigma, noise, device: str):
    """The step's forward (under autocast for bf16) and backward; returns the bytes live at the
    loss, the FLOPs counted up to it and those bytes by op."""
    with EmulatedAutocast(device):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            per_video = family.loss(denoiser, batch, sigma, noise)
        loss = per_video.mean()
        saved, fwd, by_op = live.total, live.flops, live.by_op("activations")
        # the engine itself, not loss.backward(): that is a torch function, during which the
        # autocast mode is suspended, and blocks recomputed in it would escape the casts
        torch.autograd.Variable._execution_engine.run_backward(
            (loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True, accumulate_grad=True)
    return saved, fwd, by_op


def optimizer_peak(shapes: list[tuple[int, ...]], cfg, layout: Layout, device: str = "cuda") -> tuple[int, int]:
    """(states, temporaries) in bytes of AdamW as `svd train` builds it (svdcli.train.engine),
    run on meta tensors over what DeepSpeed hands it: the trainable parameters (`shapes`, ZeRO-0)
    or one flat fp32 partition (ZeRO >= 1). The first update creates the states, the second
    shows an update's own temporaries. Offloaded and 8-bit updates are not traced (their states:
    memory.py; no GPU temporaries to speak of)."""
    if layout.offload_optimizer or layout.optimizer != "adamw" or not shapes:
        return 0, 0
    live = LiveBytes(round_to=CUDA_BLOCK if device == "cuda" else 1)
    if layout.zero >= 1:
        shapes = [(layout.partition(sum(math.prod(s) for s in shapes)),)]
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes]
    for p in params:
        p.grad = torch.empty_like(p)
    o = cfg.optim
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                            foreach=device == "cuda")      # torch's default on each device
    with live:
        opt.step()
        states = live.total
        live.reset_peak()
        opt.step()
    return states, live.peak - states
