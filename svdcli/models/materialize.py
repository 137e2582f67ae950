"""Build a module on the meta device and give it a checkpoint's tensors: a full-size model loads
without first initialising billions of random parameters, and a misfit is one clear line."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from svdcli.errors import SvdError


def materialize(factory: Callable[[], nn.Module], state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Build `factory()` on the meta device and take `state`'s tensors (strict)."""
    with torch.device("meta"):
        module = factory()
    problems = _misfit(module.state_dict(), state)
    if problems:
        raise SvdError(f"the checkpoint's {what} weights do not fit the model: {problems}")
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise SvdError(f"the checkpoint's {what} weights do not fit the model: {str(exc)[:400]}") from None
    for name, buf in list(module.named_buffers()):
        if buf.is_meta:  # a non-persistent buffer: not in any checkpoint, rebuild it
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            if attr != "attn_mask":
                raise SvdError(f"cannot rebuild the {what}'s buffer {name} after loading")
            # open_clip's causal text mask (unused by the image tower, kept for completeness)
            n = buf.shape[-1]
            owner.register_buffer(attr, torch.full((n, n), float("-inf")).triu_(1), persistent=False)
    return module.eval().requires_grad_(False)


def _misfit(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """One line on the tensors of `state` that `own` (a model's state dict) cannot take; "" if none."""
    shapes = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    out = []
    if shapes:
        k = shapes[0]
        out.append(f"{len(shapes)} tensors of another shape (e.g. {k}: {tuple(state[k].shape)} in the "
                   f"checkpoint, {tuple(own[k].shape)} in the model its config describes)")
    out += [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in
            (("missing", missing), ("unexpected", unexpected)) if keys]
    return "; ".join(out)
