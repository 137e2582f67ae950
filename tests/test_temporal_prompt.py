"""Temporal prompt decoupling (SVD paper sec. 6.4): the temporal cross-attention layers can take
their own text context (`temporal_crossattn`, `svd sample --temporal-prompt`) while the spatial
layers keep `--prompt`."""
from __future__ import annotations

import pytest
import torch

from random_weights import randomize_
from svdcli.diffusion.edm import Denoiser
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet
from test_train_helpers import one_thread  # noqa: F401 - one torch thread on the shared 2 cores
from numeric import assert_close_ulps

T, TOKENS = 3, 4  # a text context has several tokens (the temporal attn2's q and k then matter)


@pytest.fixture(scope="module")
def unet():
    net = VideoUNet(UNetConfig.tiny(channel_mult=(1, 2), attention_resolutions=(1, 2)))
    randomize_(net, 4)
    return net.eval().requires_grad_(False)


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, 8, 8, 8, generator=g)
    spatial, temporal = (torch.randn(1, TOKENS, 40, generator=g).repeat(T, 1, 1) for _ in range(2))
    return x, torch.full((T,), 0.5), spatial, temporal, torch.randn(T, 24, generator=g)


def _run(unet, temporal_context=None, indicator=None, context=None):
    x, ts, spatial, _, y = _inputs()
    with torch.no_grad():
        return unet(x, ts, spatial if context is None else context, y, T, indicator,
                    temporal_context=temporal_context)


def test_the_temporal_prompt_changes_the_output(unet):
    _, _, spatial, temporal, _ = _inputs()
    assert (_run(unet, temporal) - _run(unet)).abs().max() > 1e-3


def test_the_temporal_prompt_reaches_only_the_temporal_layers(unet):
    """Image-only frames take the spatial path alone (alpha = 1): the temporal prompt then has
    no effect, while the spatial prompt still does."""
    _, _, spatial, temporal, _ = _inputs()
    images = torch.ones(1, T)
    assert_close_ulps(_run(unet, temporal, images), _run(unet, None, images))
    assert (_run(unet, temporal, images, context=temporal) - _run(unet, temporal, images)).abs().max() > 1e-3


def test_the_same_prompt_for_both_is_no_temporal_prompt(unet):
    _, _, spatial, _, _ = _inputs()
    assert_close_ulps(_run(unet, spatial.clone()), _run(unet))


def test_the_denoiser_passes_temporal_crossattn_to_the_unet(unet):
    x, _, spatial, temporal, y = _inputs()
    d, x, base = Denoiser(unet), x[:, :4], {"vector": y, "concat": x[:, 4:], "crossattn": spatial}
    with torch.no_grad():
        plain = d(x, 1.0, base, T)
        same = d(x, 1.0, {**base, "temporal_crossattn": spatial}, T)
        other = d(x, 1.0, {**base, "temporal_crossattn": temporal}, T)
    assert_close_ulps(plain, same)
    assert (other - plain).abs().max() > 1e-3


def test_text_conditioning_embeds_the_temporal_prompt_and_its_unconditional_is_zero():
    from svdcli.errors import SvdError
    from svdcli.families.svd.encoders import tiny_encoders
    from svdcli.families.svd.sampling_conditioning import OfficialConditioning, TrainedConditioning

    enc = tiny_encoders(UNetConfig.tiny(), 0)
    encode = TrainedConditioning(enc, "t2v")
    kw = dict(fps_id=6, motion_bucket_id=127, cond_aug=0.0, noise=torch.zeros(1, 3, 64, 64))
    cond, uncond = encode(None, prompt="a harbour at dusk", temporal_prompt="panning right", **kw)
    assert_close_ulps(cond["temporal_crossattn"], enc.embed_text(["panning right"]).float())
    assert_close_ulps(cond["crossattn"], enc.embed_text(["a harbour at dusk"]).float())
    assert not uncond["temporal_crossattn"].any()
    alone, _ = encode(None, prompt="a harbour at dusk", **kw)
    assert "temporal_crossattn" not in alone
    with pytest.raises(SvdError, match="--temporal-prompt needs a text-conditioned checkpoint"):
        OfficialConditioning(None)(torch.zeros(1, 3, 64, 64), temporal_prompt="panning", **kw)
