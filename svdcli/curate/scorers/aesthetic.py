"""LAION aesthetic heads on CLIP image embeddings.

Two families, both applied to L2-normalised image embeddings:
- the "improved aesthetic predictor" (`sac+logos+ava1-l14-linearMSE.pth`): an MLP
  768-1024-128-64-16-1 with dropout and NO activations, on OpenAI CLIP ViT-L/14; scores ~1-10;
- the LAION-Aesthetics V1 linear heads (`sa_0_4_vit_l_14_linear.pth`: 768->1,
  `sa_0_4_vit_b_32_linear.pth`: 512->1).

The file's keys tell which one it is (`layers.0.weight`... for the MLP, `weight`/`bias` for a
linear head), so a head is loaded from a path without naming its kind.
"""
from __future__ import annotations

from pathlib import Path

from svdcli.errors import SvdError

MLP_WIDTHS = (1024, 128, 64, 16, 1)
MLP_DROPOUT = (0.2, 0.2, 0.1)


def laion_mlp(dim: int = 768):
    """The improved-aesthetic-predictor MLP, keys `layers.{0,2,4,6,7}.*` as in the LAION file."""
    from torch import nn

    w = (dim, *MLP_WIDTHS)
    layers = [nn.Linear(w[0], w[1]), nn.Dropout(MLP_DROPOUT[0]), nn.Linear(w[1], w[2]), nn.Dropout(MLP_DROPOUT[1]),
              nn.Linear(w[2], w[3]), nn.Dropout(MLP_DROPOUT[2]), nn.Linear(w[3], w[4]), nn.Linear(w[4], w[5])]
    head = nn.Module()
    head.layers = nn.Sequential(*layers)
    head.forward = head.layers.forward  # so the wrapper is callable and its state dict keeps the prefix
    return head


def laion_linear(dim: int = 768):
    """A LAION-Aesthetics V1 linear head (keys `weight`, `bias`)."""
    from torch import nn

    return nn.Linear(dim, 1)


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a .pth/.pt/.bin (torch) or .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def head_from_state_dict(state: dict):
    """Build the head that matches the keys and load it strictly (eval mode)."""
    if "layers.0.weight" in state:
        head = laion_mlp(state["layers.0.weight"].shape[1])
    elif set(state) == {"weight", "bias"} and state["weight"].shape[0] == 1:
        head = laion_linear(state["weight"].shape[1])
    else:
        raise SvdError(f"not a LAION aesthetic head: keys {sorted(state)[:6]} (expected layers.0.weight ... "
                       f"for the MLP or weight/bias for a linear head)")
    head.load_state_dict(state, strict=True)
    return head.eval()


def load_aesthetic(path: str | Path):
    """Load an aesthetic head from a file, telling a wrong file apart from a missing one."""
    try:
        state = read_state_dict(path)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file: say which, in one line
        raise SvdError(f"cannot read aesthetic head {path}: not a whole .pth/.pt/.bin or .safetensors file "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from exc
    return head_from_state_dict(state)


def head_dim(head) -> int:
    """Embedding width a head expects."""
    first = head.layers[0] if hasattr(head, "layers") else head
    return first.in_features


def aesthetic(embeddings, head):
    """Aesthetic score per row of (N, D) image embeddings: head(e / |e|) -> (N,)."""
    import torch

    e = embeddings.float()
    e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        return head.to(e.device)(e).squeeze(-1)
