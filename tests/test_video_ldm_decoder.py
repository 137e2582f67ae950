"""Video LDM decoder temporal finetune (Blattmann et al. 2023, Sec. 3.1.1): the image VAE's
exact inflation into SVD's temporal decoder, LPIPS against its formula, the temporal
discriminator learning, the flicker metric dropping, and `svd train --family video_ldm --stage
decoder` end to end (encoder bit-identical, the export usable as `svd sample --vae`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.video_ldm.config import DecoderConfig
from svdcli.families.video_ldm.decoder import DecoderFinetune, flicker
from svdcli.models.vae import ImageAutoencoder, VAEConfig, VideoAutoencoder, inflate_image_vae
from test_train_helpers import REPO, make_shards, one_thread, tiny_overrides  # noqa: F401

T, H = 8, 32


def image_vae(bias_post_quant: bool = True) -> ImageAutoencoder:
    torch.manual_seed(0)
    vae = ImageAutoencoder(VAEConfig.tiny())
    for p in vae.parameters():  # quant_conv / post_quant_conv far from identities
        p.data.normal_(0.0, 0.05)
    if not bias_post_quant:
        vae.post_quant_conv.bias.data.zero_()
    return vae


def moving_clip() -> torch.Tensor:
    """(T, 3, H, W) in [-1, 1]: a blob moving right one pixel a frame over a drifting pattern."""
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(H).float(), indexing="ij")
    return torch.stack([torch.stack([torch.exp(-((xx - 8 - t) ** 2 + (yy - 16) ** 2) / 30),
                                     torch.sin(xx / 5 + t / 3) * 0.5 + 0.5, yy / H]) for t in range(T)]) * 2 - 1


def test_inflated_image_vae_encodes_exactly_and_decodes_frame_by_frame():
    x = torch.rand(2 * 4, 3, H, H) * 2 - 1
    z = torch.randn(2 * 4, 4, 4, 4)
    for bias in (False, True):
        image = image_vae(bias_post_quant=bias)
        video = VideoAutoencoder(VAEConfig.tiny())
        video.load_state_dict(inflate_image_vae(image.state_dict(), VAEConfig.tiny()), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(video.encode_moments(x), image.encode_moments(x), atol=1e-5, rtol=0)
            err = (video.decode(z, num_frames=4) - image.decode(z)).abs().max().item()
        if bias:  # conv_in's zero padding now sees 0 where it saw b_pq: a border effect, measured
            assert 0 < err < 0.02, err
        else:     # temporal layers are identities: each frame decodes as the image VAE decodes it
            assert err < 1e-5, err


def test_an_image_vae_file_loads_inflated_where_vaes_load(tmp_path):
    """An SD-style file (`first_stage_model.*` with quant_conv) read by the one VAE file loader:
    `svd pack --latents`, `svd sample --vae` and the decoder stage's --init all get the same
    inflated VideoAutoencoder, whose encoder gives the image VAE's moments."""
    from safetensors.torch import save_file

    from svdcli.families import pack_vae

    image = image_vae()
    path = tmp_path / "sd_vae.safetensors"
    save_file({f"first_stage_model.{k}": v.contiguous() for k, v in image.state_dict().items()}, str(path))
    vae = pack_vae(str(path))
    x = torch.rand(2, 3, H, H) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(vae.encode_moments(x), image.encode_moments(x), atol=1e-5, rtol=0)
    want = inflate_image_vae(image.state_dict(), VAEConfig.tiny())
    fixed = [k for k in want if ".time_stack.in_layers.2." not in k]  # random init behind a zero output conv
    got = vae.state_dict()
    for k in fixed:   # conv_out's bias is computed (quant_conv folded in): equal up to float32 rounding
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7, msg=k)


def test_lpips_matches_its_formula_on_torchvision_vgg(tmp_path):
    """d(x, y) = sum_l mean_hw || w_l * (u_l(x) - u_l(y)) ||^2 with u_l the channel-normalised
    VGG16 activations (relu1_2 ... relu5_3) of ImageNet-scaled inputs (Zhang et al. 2018, eq. 1)."""
    import lpips
    import torchvision

    from svdcli.models.perceptual import lpips_vgg, perceptual_distance

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16()
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    net = lpips_vgg(str(tmp_path / "vgg16.pth"))
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    got = perceptual_distance(net, x, y)

    heads = [getattr(net, f"lin{i}").model[-1].weight.flatten() for i in range(5)]
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def feats(img):
        h, out = (img - shift) / scale, []
        for i, layer in enumerate(vgg.features[:30]):
            h = layer(h)
            if i in (3, 8, 15, 22, 29):
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        want = sum(((a - b) ** 2 * w[None, :, None, None]).sum(1).mean((1, 2))
                   for a, b, w in zip(feats(x), feats(y), heads))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert isinstance(net, lpips.LPIPS) and not any(p.requires_grad for p in net.parameters())
    assert perceptual_distance(net, x, x).abs().max() < 1e-6


def test_lpips_without_weights_names_them(tmp_path, monkeypatch):
    from svdcli.models.perceptual import VGG16_URL, lpips_vgg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        lpips_vgg("")
    assert VGG16_URL in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)
    assert "perceptual_weight=0" in str(err.value)
    bad = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(MissingWeightsError, match="not torchvision's VGG16"):
        lpips_vgg(str(bad))


def finetune(perceptual_weight: float, disc_start: int) -> DecoderFinetune:
    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.encoders import tiny_encoders

    torch.manual_seed(0)
    return DecoderFinetune(tiny_encoders(unet_config("tiny"), 0).vae,
                           DecoderConfig(perceptual_weight=perceptual_weight, lpips_backbone="random",
                                         disc_start=disc_start, disc_channels=8))


def run(model: DecoderFinetune, frames: torch.Tensor, steps: int, every=None):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        loss = model(frames, torch.randn(T, 4, H // 8, H // 8, generator=gen), T, step).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if every:
            every(model.stats)


def test_temporal_discriminator_learns(one_thread):
    """30 joint steps from the start of the adversarial terms (seed 0): the discriminator's
    patch accuracy is 0.58 at its first step and 1.00 over steps 2-11 (then the decoder, pushed
    by L_G, catches up: 0.5-0.9); on a fixed pair (the clip, the untrained decoder's
    reconstruction of it) it goes from 0.59 to 0.86."""
    from svdcli.families.video_ldm.discriminator import discriminator_accuracy
    from svdcli.models.vae_blocks import to_video

    model, frames, accuracy = finetune(perceptual_weight=0.0, disc_start=0), moving_clip(), []
    eps = torch.randn(T, 4, H // 8, H // 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fake = model.reconstruct(frames, eps, T)

    def held_out() -> float:
        with torch.no_grad():
            d = model.discriminator
            return float(discriminator_accuracy(d(to_video(frames, T)), d(to_video(fake, T))))

    before = held_out()
    run(model, frames, 30, lambda stats: accuracy.append(stats["d_accuracy"]))
    assert accuracy[0] < 0.7 and sum(accuracy[1:11]) / 10 > 0.9, accuracy
    assert held_out() > before + 0.15, (before, held_out())
    assert model.stats["adaptive_weight"] > 0


def test_decoder_flicker_drops_on_a_tiny_overfit_run(one_thread):
    """Decoding posterior samples of one moving clip: mean |x_hat_{t+1} - x_hat_t| minus the
    source's 0.083 is 0.085 before and 0.053 after 100 steps (seed 0; L1, and the adversarial
    terms from step 50; LPIPS is left out for time); the encoder is unchanged."""
    model, frames = finetune(perceptual_weight=0.0, disc_start=50), moving_clip()
    eps = torch.randn(T, 4, H // 8, H // 8, generator=torch.Generator().manual_seed(1))
    encoder = {k: v.clone() for k, v in model.vae.encoder.state_dict().items()}

    def measured():
        with torch.no_grad():
            return flicker(model.reconstruct(frames, eps, T), frames, T)

    before = measured()
    run(model, frames, 100)
    after = measured()
    assert before > 0.05 and after < 0.8 * before, (before, after)
    assert all(torch.equal(v, encoder[k]) for k, v in model.vae.encoder.state_dict().items())


# --- through the CLI ----------------------------------------------------------------------
STEPS = 3


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vldm_decoder")
    shards = make_shards(tmp / "d", frames=4)
    sets = tiny_overrides(frames=4, steps=STEPS, checkpoint_every=STEPS, **{
        "optim.lr": 1e-3, "decoder.lpips_backbone": "random", "decoder.disc_start": 1,
        "decoder.disc_channels": 8})
    out = tmp / "run"
    result = CliRunner().invoke(app, ["train", "--family", "video_ldm", "--stage", "decoder", "--config",
                                      str(REPO / "pipelines/train/video_ldm/decoder.yaml"), "--data", str(shards),
                                      "--out", str(out), "--no-progress", "--no-tensorboard",
                                      *[a for kv in sets for a in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    return tmp, out, out / "checkpoints" / f"step_{STEPS:06d}" / "ema.safetensors", sets


def test_decoder_stage_trains_the_decoder_and_keeps_the_encoder(decoder_run):
    import json

    from safetensors import safe_open

    from svdcli.families import family_for
    from svdcli.train.config import load_config

    tmp, out, export, sets = decoder_run
    cfg = load_config(REPO / "pipelines/train/video_ldm/decoder.yaml", sets)
    initial = family_for("video_ldm").build(cfg).state_dict()
    with safe_open(str(export), framework="pt") as f:
        trained = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert not any(k.startswith("perceptual.") for k in trained)             # the frozen LPIPS stays out
    encoder = [k for k in trained if k.startswith("vae.encoder.")]
    decoder = [k for k in trained if k.startswith("vae.decoder.")]
    assert encoder and all(torch.equal(trained[k], initial[k]) for k in encoder)
    assert any(not torch.equal(trained[k], initial[k]) for k in decoder if ".time_stack." in k)
    assert any(not torch.equal(trained[k], initial[k]) for k in trained if k.startswith("discriminator."))
    assert meta["format"] == "svdcli" and json.loads(meta["vae_config"])["ch"] == 32
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("d_accuracy" in rec for rec in log) and any("nll" in rec for rec in log)


def test_decoder_export_loads_where_svds_vae_loads(decoder_run):
    from safetensors.torch import load_file

    from svdcli.families import pack_vae
    from svdcli.families.svd.tiny import write_tiny_checkpoint
    from svdcli.sample.pipeline import load_model, replace_vae

    tmp, out, export, _ = decoder_run
    trained = {k[len("vae."):]: v for k, v in load_file(str(export)).items() if k.startswith("vae.")}
    for source in (export, out):  # the export, and the run folder (its newest export)
        vae = pack_vae(str(source))
        assert all(torch.equal(v, trained[k]) for k, v in vae.state_dict().items())
    svd = write_tiny_checkpoint(tmp / "tiny_svd.safetensors")
    model = load_model(svd)
    replace_vae(model, export)
    assert all(torch.equal(v, trained[k]) for k, v in model.vae.state_dict().items())

    from PIL import Image

    Image.new("RGB", (128, 64), (120, 60, 30)).save(tmp / "cond.png")
    videos = {}
    for name, extra in (("own", []), ("finetuned", ["--vae", str(out)])):
        result = CliRunner().invoke(app, ["sample", "--checkpoint", str(svd), "--image", str(tmp / "cond.png"),
                                          "--steps", "2", "--frames", "4", "--out", str(tmp / name),
                                          "--format", "png", "--no-progress", *extra])
        assert result.exit_code == 0, result.output
        videos[name] = sorted((tmp / name).glob("*.png"))
    assert "VAE from" in result.output
    differ = [Image.open(a).tobytes() != Image.open(b).tobytes() for a, b in zip(videos["own"], videos["finetuned"])]
    assert len(differ) == 4 and any(differ)


def test_decoder_export_is_not_a_video_model(decoder_run):
    from svdcli.sample.pipeline import load_model

    _, out, export, _ = decoder_run
    with pytest.raises(SvdError, match="decoder finetune .* --vae"):
        load_model(export)


def test_decoder_stage_config_errors(tmp_path):
    shards = make_shards(tmp_path / "d", frames=4)
    for override, message in (("data.latents=true", "trains on pixels"),
                              ("model=svd", "starts from a VAE")):
        sets = tiny_overrides(frames=4, steps=1, **{"decoder.lpips_backbone": "random"}) + [override]
        result = CliRunner().invoke(app, ["train", "--family", "video_ldm", "--stage", "decoder", "--config",
                                          str(REPO / "pipelines/train/video_ldm/decoder.yaml"), "--data",
                                          str(shards), "--out", str(tmp_path / override), "--no-progress",
                                          "--no-tensorboard", *[a for kv in sets for a in ("--set", kv)]])
        assert result.exit_code != 0 and message in result.output, result.output
