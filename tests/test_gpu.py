"""GPU checks (skipped without CUDA): half-precision paths agree with float32 and sampling runs."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu


def _unet_inputs(cfg, frames=4, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    n = frames  # one video
    x = torch.randn(n, cfg.in_channels, 16, 24, generator=g)
    t = torch.full((n,), 0.25 * np.log(3.0))
    ctx = torch.randn(1, 1, cfg.context_dim, generator=g).repeat(n, 1, 1)
    y = torch.randn(1, cfg.adm_in_channels, generator=g).repeat(n, 1)
    return x, t, ctx, y


def _randomize(net, seed=0):
    """Overwrite every weight (default init zeroes the output layers, which would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5 * (1.0 if p.dim() > 1 else 0.1))
    return net


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_unet_half_precision_on_gpu_follows_float32(dtype):
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    cfg = UNetConfig.tiny()
    torch.manual_seed(0)
    net = _randomize(VideoUNet(cfg)).eval()
    x, t, ctx, y = _unet_inputs(cfg)
    with torch.no_grad():
        ref = net(x, t, ctx, y, num_video_frames=4)
        gpu = net.cuda()
        with torch.autocast("cuda", dtype=dtype):
            out = gpu(x.cuda(), t.cuda(), ctx.cuda(), y.cuda(), num_video_frames=4).float().cpu()
    rel = (out - ref).norm() / ref.norm()
    assert ref.abs().mean() > 0.01 and rel < 3e-2, f"{dtype} output deviates from float32 by {rel:.3e} (relative L2)"


def test_sampling_on_gpu_in_fp16_writes_the_requested_frames(tmp_path):
    from svdcli.sample.pipeline import SampleOptions, VideoPipeline
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", frames=4, width=128, height=64)
    image = (np.random.default_rng(0).random((64, 128, 3)) * 255).astype(np.uint8)
    pipe = VideoPipeline.from_checkpoint(ckpt, device="cuda", dtype="fp16")
    result = pipe.generate(image, SampleOptions(frames=4, steps=3, seed=0))
    assert result.frames.shape == (4, 64, 128, 3) and result.frames.dtype == np.uint8
    cpu = VideoPipeline.from_checkpoint(ckpt, device="cpu", dtype="fp32").generate(
        image, SampleOptions(frames=4, steps=3, seed=0))
    # same seed, same noise drawn on the CPU: fp16 on GPU stays close to the fp32 CPU video
    assert np.abs(result.frames.astype(int) - cpu.frames.astype(int)).mean() < 8
