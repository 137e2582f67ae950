"""The traced step: live bytes by hand, autocast's casts replayed on meta tensors as torch casts
real ones, fused attention's memory, FLOPs by hand."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svdcli.train.plan.autocast import EmulatedAutocast
from svdcli.train.plan.live import LiveBytes


def test_live_bytes_count_new_storages_until_released():
    live = LiveBytes()
    weight = torch.empty(1000, 1000, device="meta")          # made before: not the step's
    with live:
        a = torch.empty(1000, device="meta")                  # 4000 bytes
        b = a.view(10, 100)                                   # a view: no new storage
        a.add_(1.0)                                           # in place: none either
        wt = weight.t()                                       # a view of a weight: never counted
        c = torch.empty(2000, device="meta")                  # 8000 more
        assert live.total == 12000
        del a, c
        assert live.total == 4000                             # b keeps a's storage alive
        del b
        assert live.total == 0
    assert live.peak == 12000 and wt.shape == (1000, 1000)


def test_live_bytes_round_like_the_cuda_allocator():
    live = LiveBytes(round_to=512)
    with live:
        x = torch.empty(3, device="meta")
    assert live.total == 512 and x.numel() == 3


def test_flops_of_a_linear_step_by_hand():
    live = LiveBytes()
    lin = nn.Linear(64, 32, bias=False, device="meta")
    x = torch.empty(16, 64, device="meta", requires_grad=True)
    with live:
        lin(x).sum().backward()
    # forward x @ W^T and, backward, grad_x = g @ W and grad_W = g^T @ x: 2 M N K each
    assert live.flops == 3 * 2 * 16 * 64 * 32


class _Block(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear, a residual: the kinds of ops a UNet block runs."""

    def __init__(self):
        super().__init__()
        self.norm, self.a, self.b = nn.LayerNorm(32), nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x):
        return x + self.b(F.gelu(self.a(self.norm(x))))


def _saved(fn) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of every tensor autograd saves while `fn` runs, sorted."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((tuple(t.shape), t.dtype)) or t,
                                                  lambda t: t):
        fn()
    return sorted(saved, key=str)


@pytest.mark.parametrize("network", ["block", "tiny_unet"])
def test_emulated_cpu_autocast_saves_what_real_cpu_autocast_saves(network):
    """The emulation with torch's CPU policy, on meta tensors, keeps the same tensors in the same
    dtypes as torch.autocast('cpu') on real ones: the machinery the CUDA plan uses is exact."""
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    def build():
        torch.manual_seed(0)
        return _Block() if network == "block" else VideoUNet(UNetConfig.tiny())

    def inputs(device):
        if network == "block":
            return (torch.randn(8, 32, device=device),)
        cfg = UNetConfig.tiny()
        return (torch.randn(4, cfg.in_channels, 16, 16, device=device), torch.randn(4, device=device),
                torch.randn(4, 1, cfg.context_dim, device=device), torch.randn(4, cfg.adm_in_channels, device=device), 4)

    real = build()
    with torch.device("meta"):
        fake = build()

    def run(net, args):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(*args)

    expected = _saved(lambda: run(real, inputs("cpu")))
    with EmulatedAutocast("cpu"):
        got = _saved(lambda: run(fake, inputs("meta")))
    # one known difference, not autocast's: GroupNorm's per-group mean and rstd (N, 32), which
    # CPU's kernel keeps in float32 for a bf16 input and the meta kernel gives the input's dtype
    stats = lambda saved: [(s, torch.float32 if s == (4, 32) else d) for s, d in saved]  # noqa: E731
    assert expected and sorted(stats(got), key=str) == sorted(stats(expected), key=str)


def test_cuda_policy_keeps_norms_in_float32_where_cpu_policy_does_not():
    """CUDA's autocast runs layer_norm in float32 (its output too); CPU's leaves it to the input."""
    with torch.device("meta"):
        block = _Block()
    x = torch.empty(8, 32, device="meta")
    for device, norm_dtype in (("cuda", torch.float32), ("cpu", torch.bfloat16)):
        seen = []
        hook = block.norm.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        with EmulatedAutocast(device), torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x.bfloat16())
        hook.remove()
        assert seen == [norm_dtype] and out.dtype == torch.bfloat16


def test_attention_holds_what_a_fused_kernel_holds():
    """bf16 attention over 4096 tokens: the flash kernel keeps q, k, v, out and a logsumexp per
    query (O(L)); the math path on meta would keep the (L, L) attention matrix (2 heads: 64 MiB)."""
    q = torch.empty(1, 2, 4096, 64, device="meta", dtype=torch.bfloat16, requires_grad=True)
    live = LiveBytes()
    with live, EmulatedAutocast("cuda"):
        out = F.scaled_dot_product_attention(q, q, q)
    lse = 2 * 4096 * 4                                       # float32 per head and query
    kept = out.numel() * 2 + lse
    assert kept <= live.total <= kept + 64                   # + the kernel's rng seed and offset
    assert live.total < 2 * 4096 * 4096 * 2 / 16
