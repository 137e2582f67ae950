"""Comparing computed floats the way other machines will compute them.

Values that are *copied* (loaded back from a file, left untouched by an optimizer, drawn again
from the same seed) are compared bit for bit. Values that are *computed* (matmuls, convolutions,
folded weights, reductions, transcendental functions, any op whose kernel the CPU picks) round
differently on other CPUs, instruction sets (AVX-512, AVX2, SSE), BLAS builds and thread counts,
so they are compared within a few units in the last place (ulps) of their dtype, at the
magnitude of the values involved. `make test-portable` runs the numeric tests under several
such settings.
"""
from __future__ import annotations

import numpy as np
import torch

ULPS = 16


def ulp_tolerance(dtype, scale: float, ulps: int = ULPS) -> float:
    """`ulps` units of `dtype`'s resolution (machine epsilon) at magnitude `scale`."""
    eps = torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) else float(np.finfo(dtype).eps)
    return ulps * eps * max(float(scale), 1e-30)


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.as_tensor(np.asarray(value))


def assert_close_ulps(actual, expected, *, ulps: int = ULPS, scale: float | None = None, msg: str = "") -> None:
    """`actual` equals the computed `expected` to within `ulps` ulps of their dtype at `scale`
    (default: the largest |expected|; pass the magnitude of the inputs where a result is a
    small difference of large terms)."""
    a, e = _as_tensor(actual), _as_tensor(expected)
    assert a.shape == e.shape, f"{msg} shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}"
    dtype = a.dtype if a.dtype.is_floating_point else torch.float64
    if scale is None:
        scale = float(e.abs().max()) if e.numel() else 0.0
    atol = ulp_tolerance(dtype, scale, ulps)
    torch.testing.assert_close(a, e.to(a.dtype), rtol=0, atol=atol, check_dtype=False,
                               msg=lambda m: f"{msg} not within {ulps} ulps of {dtype} at {scale:.3g} "
                                             f"(atol {atol:.3g}): {m}")


def assert_ulp_distance(actual, expected, max_ulps: int = 2, *, msg: str = "") -> None:
    """Each element of `actual` is within `max_ulps` representable values of `expected`'s
    element, in `expected`'s dtype: for values checked against a stored reference element by
    element (a transcendental function, a correctly rounded op whose operands another kernel
    may fuse)."""
    a, e = _as_tensor(actual), _as_tensor(expected)
    assert a.shape == e.shape, f"{msg} shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}"
    a = a.to(e.dtype)
    spacing = (torch.nextafter(e.abs(), torch.full_like(e, float("inf"))) - e.abs())
    worst = ((a - e).abs() / spacing).max().item() if e.numel() else 0.0
    assert worst <= max_ulps, f"{msg} {worst:.1f} ulps of {e.dtype} apart (at most {max_ulps} allowed)"


def close_ulps(actual, expected, *, ulps: int = ULPS, scale: float | None = None) -> bool:
    """The boolean form of `assert_close_ulps`, for `all(...)` over state dicts."""
    try:
        assert_close_ulps(actual, expected, ulps=ulps, scale=scale)
    except AssertionError:
        return False
    return True
