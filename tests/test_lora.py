"""LoRA on the temporal attention: every wrapped projection trains, and the merged export is
the same network as the wrapped one."""
from __future__ import annotations

import pytest
import torch

from random_weights import randomize_
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet
from svdcli.models.lora import LoRALinear, apply_lora, merge_lora_state

RANK, ALPHA = 4, 8.0          # scale alpha / rank = 2, so a merge that forgets it is caught
B, T = 2, 2
PROJECTIONS = {f"attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")}


def _cfg() -> UNetConfig:
    return UNetConfig.tiny(channel_mult=(1, 2), attention_resolutions=(1, 2))


def _inputs(tokens: int):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B * T, 8, 8, 8, generator=g)
    ts = torch.randn(B * T, generator=g)
    ctx = torch.randn(B, tokens, 40, generator=g).repeat_interleave(T, dim=0)  # one context per video
    return x, ts, ctx, torch.randn(B * T, 24, generator=g)


def _plain_unet() -> VideoUNet:
    unet = VideoUNet(_cfg())
    randomize_(unet, 1)  # the zero output layers of a fresh UNet would give every LoRA zero gradient
    return unet


def _lora_unet() -> tuple[VideoUNet, dict[str, LoRALinear]]:
    torch.manual_seed(0)  # LoRA A matrices
    unet = _plain_unet()
    names = apply_lora(unet, RANK, ALPHA)
    return unet, {n: unet.get_submodule(n) for n in names}


def _loss(unet, tokens: int) -> torch.Tensor:
    x, ts, ctx, y = _inputs(tokens)
    return unet(x, ts, ctx, y, T).square().mean()


@pytest.fixture(scope="module")
def trained():
    """A LoRA UNet after three AdamW steps on a 3-token context (every projection matters)."""
    unet, wrapped = _lora_unet()
    initial = {n: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for n, m in wrapped.items()}
    base = {k: v.clone() for k, v in unet.state_dict().items() if "lora" not in k}
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-2)
    first_grads = None
    for _ in range(3):
        opt.zero_grad()
        _loss(unet, tokens=3).backward()
        if first_grads is None:
            first_grads = {n: m.lora_B.grad for n, m in wrapped.items()}
        opt.step()
    return unet, wrapped, initial, first_grads, base


def test_lora_wraps_every_temporal_attention_projection(trained):
    from svdcli.models.attention import VideoTransformerBlock

    unet, wrapped, *_ = trained
    blocks = {n.rsplit(".attn", 1)[0] for n in wrapped}
    assert blocks == {n for n, m in unet.named_modules() if isinstance(m, VideoTransformerBlock)}
    for block in blocks:
        assert {n[len(block) + 1:] for n in wrapped if n.startswith(block + ".")} == PROJECTIONS


def test_every_wrapped_projection_gets_gradient_and_changes(trained):
    unet, wrapped, initial, first_grads, base = trained
    no_grad = [n for n, g in first_grads.items() if g is None or not g.abs().sum()]
    assert not no_grad, f"LoRA matrices without gradient: {no_grad}"
    for name, m in wrapped.items():  # A moves once B is nonzero, from the second step on
        a0, b0 = initial[name]
        assert not torch.equal(m.lora_A, a0) and not torch.equal(m.lora_B, b0), name
    now = unet.state_dict()
    assert all(torch.equal(now[k], v) for k, v in base.items())  # only the LoRA matrices train


def test_one_context_token_gives_q_and_k_of_cross_attention_exactly_zero_gradient():
    """SVD's context is one CLIP token: softmax over one key is 1, so attn2's q/k cannot matter.
    Their LoRA matrices still get a (zero) gradient, as the full attention would give them."""
    unet, wrapped = _lora_unet()
    _loss(unet, tokens=1).backward()
    for name, m in wrapped.items():
        dead = name.endswith(("attn2.to_q", "attn2.to_k"))
        assert m.lora_B.grad is not None, name
        assert (m.lora_B.grad.abs().sum() == 0) == dead, name


@pytest.mark.parametrize("tokens", [1, 3])
def test_merged_lora_is_the_same_network(trained, tokens):
    unet = trained[0]
    merged = VideoUNet(_cfg())
    merged.load_state_dict(merge_lora_state(unet.state_dict(), ALPHA / RANK), strict=True)
    plain = _plain_unet()
    with torch.no_grad():
        x, ts, ctx, y = _inputs(tokens)
        want, got, before = unet(x, ts, ctx, y, T), merged(x, ts, ctx, y, T), plain(x, ts, ctx, y, T)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (want - before).abs().max() > 1e-3  # the LoRA changed the network: the check has teeth


def test_fresh_lora_starts_from_the_base_model():
    unet, _ = _lora_unet()
    plain = VideoUNet(_cfg())
    plain.load_state_dict(merge_lora_state(unet.state_dict(), ALPHA / RANK), strict=True)
    with torch.no_grad():
        x, ts, ctx, y = _inputs(3)
        torch.testing.assert_close(unet(x, ts, ctx, y, T), plain(x, ts, ctx, y, T), atol=1e-6, rtol=0)
