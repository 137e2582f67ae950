"""torch.autocast's casting rules replayed on meta tensors, so a traced step holds the dtypes a
GPU (or CPU) run would hold.

Autocast is a dispatch key of CUDA and CPU tensors; meta tensors have none, so under
`torch.autocast` a meta forward runs everything in float32 (and a "fake" CUDA tensor cannot run
a backward pass without a GPU). `EmulatedAutocast` is a torch-function mode that applies the
same per-op policy above autograd, where autocast itself sits, so the tensors autograd saves
have the dtypes they would have on the device:

- lower precision ops (matmuls, convolutions, attention) cast their floating inputs to the
  autocast dtype; a float32 leaf that requires grad (a trained weight) is cast once and the
  copy cached until autocast exits, as `at::autocast::cached_cast` does;
- float32 ops (norms, exp, pow, upsampling, losses, ...) cast to float32; softmax, sum, cumsum,
  ... produce float32 unless given a dtype; promote ops run in the widest input type.

The op lists are those of `aten/src/ATen/autocast_mode.{h,cpp}` (torch 2.x: CUDA uses
AT_FORALL_LOWER_PRECISION_FP / _FP32 / _FP32_SET_OPT_DTYPE / _PROMOTE; CPU has its own list).

The switch is the CPU autocast state (`torch.autocast("cpu", dtype)`), which has no effect on
meta tensors and which `torch.utils.checkpoint` saves and restores, so recomputed blocks are
cast as in their first forward. Scaled dot-product attention runs the device's fused kernel
(flash for bf16/fp16 on CUDA, memory-efficient for fp32, the CPU flash kernel on a CPU), whose
saved tensors (q, k, v, out, logsumexp) are what the GPU keeps; the meta default would be the
math path, which materialises the (L, L) attention matrix.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

# aten names; Python spellings map onto them in _op_name
_MATMULS = {"linear", "matmul", "mm", "bmm", "baddbmm", "addmm", "addbmm", "prelu",
            "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
            "conv_tbc", "linalg_vecdot", "scaled_dot_product_attention"}
_CUDA_LOWER = _MATMULS | {"addmv", "addr", "einsum", "mv", "chain_matmul", "linalg_multi_dot"}
_CUDA_FP32 = {"acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
              "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "group_norm",
              "norm", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
              "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss",
              "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
              "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits",
              "dist", "pdist", "cdist", "renorm", "logsumexp", "interpolate"}
_CUDA_FP32_OUT = {"prod", "softmax", "log_softmax", "cumprod", "cumsum", "sum",
                  "linalg_vector_norm", "linalg_matrix_norm"}
_CUDA_PROMOTE = {"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sample",
                 "index_put", "tensordot", "scatter_add"}
_CPU_LOWER = _MATMULS
_CPU_FP32 = {"binary_cross_entropy", "grid_sample", "prod", "cdist", "mse_loss", "cosine_embedding_loss",
             "nll_loss", "hinge_embedding_loss", "poisson_nll_loss", "smooth_l1_loss", "cross_entropy",
             "l1_loss", "huber_loss", "margin_ranking_loss", "soft_margin_loss", "triplet_margin_loss",
             "multi_margin_loss", "kl_div", "multilabel_margin_loss", "binary_cross_entropy_with_logits"}
_CPU_PROMOTE = {"stack", "cat", "index_copy"}

POLICIES = {
    "cuda": {"lower": _CUDA_LOWER, "fp32": _CUDA_FP32, "fp32_out": _CUDA_FP32_OUT, "promote": _CUDA_PROMOTE},
    "cpu": {"lower": _CPU_LOWER, "fp32": _CPU_FP32, "fp32_out": set(), "promote": _CPU_PROMOTE},
}
_ALIASES = {"__matmul__": "matmul", "__rmatmul__": "matmul", "__pow__": "pow", "__rpow__": "pow",
            "__ipow__": "pow", "float_power": "pow", "group_norm": "group_norm"}
_UPSAMPLING = {"nearest", "linear", "bilinear", "bicubic", "trilinear", "nearest-exact"}  # fp32 on CUDA


def _op_name(func, kwargs) -> str | None:
    name = getattr(func, "__name__", None)
    name = _ALIASES.get(name, name)
    if name == "interpolate" and kwargs.get("mode", "nearest") not in _UPSAMPLING:
        return None                                  # 'area' is an adaptive pool: no autocast rule
    return name


def _floating(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64


class EmulatedAutocast(TorchFunctionMode):
    """Autocast's casts for meta tensors, active while CPU autocast is enabled (see module doc).

    `device` chooses the policy table and the attention kernel: "cuda" for GPU plans, "cpu" to
    reproduce a CPU run (the planner's validation)."""

    def __init__(self, device: str = "cuda"):
        super().__init__()
        self.device = device
        self.policy = POLICIES[device]
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func, kwargs)
        enabled = torch.is_autocast_enabled("cpu")
        if not enabled and self._cache:
            self._cache.clear()                      # autocast exited: its weight cache goes too
        if enabled and name is not None:
            args, kwargs = self._cast(name, args, kwargs, torch.get_autocast_dtype("cpu"))
        if name == "scaled_dot_product_attention" and _fused_kernel_takes(*args):
            return self._attention(*args, **kwargs)
        return func(*args, **kwargs)

    # --- casting --------------------------------------------------------------------------
    def _cast(self, name: str, args, kwargs, low: torch.dtype):
        p = self.policy
        if name in p["lower"]:
            return self._map(args, kwargs, lambda t: self._cached(t, low))
        if name in p["fp32"]:
            return self._map(args, kwargs, lambda t: t.float())
        if name in p["fp32_out"] and args and _floating(args[0]) and kwargs.get("dtype") is None:
            return args, {**kwargs, "dtype": torch.float32}
        if name in p["promote"]:
            flat = [t for t in _tensors(args) + _tensors(kwargs) if _floating(t)]
            widest = torch.float32 if any(t.dtype == torch.float32 for t in flat) else low
            return self._map(args, kwargs, lambda t: t.to(widest))
        return args, kwargs

    def _cached(self, t: torch.Tensor, low: torch.dtype) -> torch.Tensor:
        if t.dtype == low:
            return t
        if not (t.dtype == torch.float32 and t.requires_grad and t.is_leaf and not t._is_view()):
            return t.to(low)
        hit = self._cache.get(id(t))
        if hit is None or hit[0] is not t:
            hit = self._cache[id(t)] = (t, t.to(low))
        return hit[1]

    @staticmethod
    def _map(args, kwargs, cast):
        def one(x):
            if _floating(x):
                return cast(x)
            if isinstance(x, (list, tuple)):
                return type(x)(one(v) for v in x)
            return x
        return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}

    # --- attention ------------------------------------------------------------------------
    def _attention(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """The fused kernel the device would pick: its saved tensors, not the math path's."""
        aten = torch.ops.aten
        if self.device == "cpu":
            return aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
        if attn_mask is None and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
            return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
        needs_lse = any(t.requires_grad for t in (q, k, v))
        return aten._scaled_dot_product_efficient_attention(
            q, k, v, attn_mask, needs_lse, dropout_p, is_causal, scale=scale)[0]


def _fused_kernel_takes(q, k=None, v=None, *_, **__) -> bool:
    """What torch's kernel choice requires before a fused kernel: (B, heads, L, d) tensors and a
    head size of a multiple of 8; otherwise it runs the math path, and so does the trace."""
    return all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k, v)) and q.shape[-1] % 8 == 0


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []
