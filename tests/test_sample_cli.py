"""`svd sample` end to end on a tiny checkpoint, and the failures a user can run into."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from random_weights import randomize_
from svdcli.cli.main import app


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors",
                                 frames=3, width=64, height=64)


@pytest.fixture(scope="module")
def cond_png(tmp_path_factory):
    from PIL import Image

    yy, xx = np.mgrid[0:90, 0:200]
    img = np.stack([xx, yy * 2, (xx + yy) % 255], -1).astype(np.uint8)  # 20:9, not the model's 1:1
    path = tmp_path_factory.mktemp("img") / "cond.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_pipe(tiny_ckpt):
    from svdcli.sample.pipeline import VideoPipeline

    return VideoPipeline.from_checkpoint(tiny_ckpt, device="cpu")


def _run(*args):
    return CliRunner().invoke(app, ["sample", *map(str, args)])


def test_cli_writes_a_playable_mp4_with_every_frame(tiny_ckpt, cond_png, tmp_path):
    import av

    out = tmp_path / "video.mp4"
    result = _run("--image", cond_png, "--checkpoint", tiny_ckpt, "--steps", 1, "--decode-chunk", 3,
                  "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert float(container.streams.video[0].average_rate) == 7  # fps_id 6 + 1
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    assert "wrote" in result.output and "sampling" in result.output and "decoding" in result.output
    assert "crop" in result.output  # the 20:9 image was cropped to 1:1, and the user is told


def test_cli_gif_output(tiny_ckpt, cond_png, tmp_path):
    from PIL import Image

    result = _run("-i", cond_png, "-c", tiny_ckpt, "--steps", 1, "--frames", 2, "-o", tmp_path / "v.gif", "--no-progress")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "v.gif").n_frames == 2


def test_no_checkpoint_says_where_to_get_weights(cond_png):
    result = _run("--image", cond_png)
    assert result.exit_code == 2
    assert "huggingface.co/stabilityai" in result.output and "make demo" in result.output


@pytest.mark.parametrize("args,message", [
    (["--image", "IMG_MISSING"], "not found"),
    (["--image", "IMG_CORRUPT"], "cannot read"),
    (["--frames", 7], "more than twice"),
    (["--prompt", "a cat"], "text-conditioned"),
    (["--sampler", "dpm"], "unknown --sampler"),
    (["--checkpoint", "CKPT_MISSING"], "checkpoint not found"),
    (["--out", "video.avi"], "output format"),
])
def test_user_mistakes_are_one_line_errors(tiny_ckpt, cond_png, tmp_path, args, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    subst = {"IMG_MISSING": tmp_path / "none.png", "IMG_CORRUPT": bad, "CKPT_MISSING": tmp_path / "no.safetensors"}
    args = [subst.get(a, a) for a in args]
    base = {"--image": cond_png, "--checkpoint": tiny_ckpt, "--out": tmp_path / "o.mp4"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    flat = [x for kv in base.items() for x in kv] + [x for kv in zip(args[::2], args[1::2]) if kv[0] not in base for x in kv]
    result = _run(*flat, "--steps", 1, "--no-progress")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_same_seed_same_video_other_seed_other_video(tiny_pipe):
    from svdcli.sample.pipeline import SampleOptions

    image = np.full((64, 64, 3), 128, np.uint8)
    runs = [tiny_pipe.generate(image, SampleOptions(steps=1, frames=2, seed=s), warn=lambda m: None).frames
            for s in (5, 5, 6)]
    assert np.abs(runs[0].astype(int) - runs[1]).max() <= 1  # uint8 rounding of ulp-level differences
    assert np.abs(runs[0].astype(int) - runs[2]).mean() > 1.0
    assert runs[0].shape == (2, 64, 64, 3)


def test_decode_chunks_match_official_chunked_decoding(fixtures_dir):
    """--decode-chunk 2 decodes frames [0,2) [2,4) [4,5) separately, as sgm's decode_first_stage."""
    from safetensors.torch import load_file

    from svdcli.families.svd.sampling import decode_latents
    from svdcli.models.vae import SCALE_FACTOR, VAEConfig, VideoAutoencoder
    from svdcli.sample.pipeline import frames_to_uint8

    io = {k: v.clone() for k, v in load_file(str(fixtures_dir / "vae_tiny_io.safetensors")).items()}
    prefix = "first_stage_model."
    vae = VideoAutoencoder(VAEConfig.tiny())
    vae.load_state_dict({k[len(prefix):]: v for k, v in load_file(str(fixtures_dir / "vae_tiny.safetensors")).items()})
    vae.eval()
    latents = io["decoder_latent"] * SCALE_FACTOR

    def decode(chunk):
        with torch.no_grad():
            return frames_to_uint8(decode_latents(vae, latents, 5, chunk))

    for chunk, ref in ((2, "decoded_chunk2"), (5, "decoded_t5"), (None, "decoded_t5")):
        got = decode(chunk).astype(int)
        want = frames_to_uint8(io[ref]).astype(int)
        assert np.abs(got - want).max() <= 1  # uint8 rounding of a <2e-5 float difference
    assert not np.array_equal(decode(2), decode(5))


def _training_export(folder, mode):
    """A UNet as `svd train` exports it (EMA file with its training config)."""
    import torch

    from svdcli.families.svd.config import unet_config
    from svdcli.models.unet import VideoUNet
    from svdcli.train.checkpoint import write_export
    from svdcli.train.config import config_from_dict

    cfg = config_from_dict({"model": "tiny", "cond": {"mode": mode}, "data": {"frames": 2, "height": 64, "width": 64}})
    torch.manual_seed(0)
    unet = VideoUNet(unet_config(cfg.family_config.model))
    randomize_(unet, 0)  # a fresh UNet's zero output layer would make every video the same
    path = folder / "ema.safetensors"
    write_export(path, {f"net.{k}": v for k, v in unet.state_dict().items()}, cfg, step=10, ema=True)
    return path


@pytest.fixture(scope="module")
def t2v_run(tmp_path_factory):
    return _training_export(tmp_path_factory.mktemp("t2v"), "t2v")


def test_image_samples_an_image_conditioned_training_export(tmp_path, cond_png):
    ckpt = _training_export(tmp_path, "i2v")
    result = _run("--image", cond_png, "--checkpoint", ckpt, "--steps", 1, "--out", tmp_path / "v.gif", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "i2v conditioning" in result.output and "2 frames 64x64" in result.output


def test_prompt_samples_a_text_conditioned_training_export(t2v_run, cond_png, tmp_path):
    out = tmp_path / "t2v.mp4"
    result = _run("--prompt", "a red ball rolling", "--checkpoint", t2v_run, "--steps", 1, "--out", out,
                  "--image", cond_png, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "trained 10 steps" in result.output and "2 frames 64x64" in result.output
    assert "image is not used" in result.output  # never silently ignored
    assert out.stat().st_size > 0
    result = _run("--checkpoint", t2v_run, "--image", cond_png, "--steps", 1, "--no-progress")
    assert result.exit_code == 2 and "--prompt" in result.output


def _gradient(flip: bool = False) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    return img[::-1].copy() if flip else img


def _frames(pipe, image, **options) -> np.ndarray:
    from svdcli.sample.pipeline import SampleOptions

    opts = SampleOptions(steps=1, frames=2, seed=0, **options)
    return pipe.generate(image, opts, warn=lambda m: None).frames.astype(int)


@pytest.fixture(scope="module")
def random_pipe(tiny_ckpt):
    """The tiny checkpoint with random weights on every UNet path, so every condition matters."""
    from svdcli.sample.pipeline import VideoPipeline

    pipe = VideoPipeline.from_checkpoint(tiny_ckpt, device="cpu")
    randomize_(pipe.model.unet, 0)
    return pipe


@pytest.mark.parametrize("change", [{"image": _gradient(flip=True)}, {"fps_id": 2}, {"motion_bucket_id": 30},
                                    {"cond_aug": 0.5}], ids=lambda c: next(iter(c)))
def test_each_condition_alone_changes_the_video(random_pipe, change):
    base = _frames(random_pipe, _gradient())
    other = _frames(random_pipe, change.pop("image", _gradient()), **change)
    assert np.abs(other - base).mean() > 0.1  # uint8 levels; an ignored condition gives exactly 0


def test_the_prompt_and_the_image_reach_training_exports(t2v_run, tmp_path):
    from svdcli.sample.pipeline import VideoPipeline

    t2v = VideoPipeline.from_checkpoint(t2v_run, device="cpu")
    a, b = (_frames(t2v, None, prompt=p) for p in ("a red ball rolling", "a cat asleep on a sofa"))
    assert np.abs(a - b).mean() > 0.1
    i2v = VideoPipeline.from_checkpoint(_training_export(tmp_path, "i2v"), device="cpu")
    assert np.abs(_frames(i2v, _gradient()) - _frames(i2v, _gradient(flip=True))).mean() > 0.1


def test_a_training_run_folder_means_its_newest_ema_export(tmp_path):
    from svdcli.runs import resolve_checkpoint

    step = tmp_path / "checkpoints" / "step_000020"
    step.mkdir(parents=True)
    (step / "ema.safetensors").write_bytes(b"")
    (tmp_path / "checkpoints" / "latest").write_text("step_000020\n")
    assert resolve_checkpoint(tmp_path) == step / "ema.safetensors"


def test_half_precision_path_stays_close_to_float32(tiny_ckpt, tiny_pipe):
    """bf16 weights with float32 norms under autocast (the GPU fp16 path, runnable on a CPU)."""
    from svdcli.sample.pipeline import SampleOptions, VideoPipeline

    half = VideoPipeline.from_checkpoint(tiny_ckpt, device="cpu", dtype="bf16")
    image = np.full((64, 64, 3), 90, np.uint8)
    opts = SampleOptions(steps=1, frames=2, seed=3)
    a = half.generate(image, opts, warn=lambda m: None).frames.astype(int)
    b = tiny_pipe.generate(image, opts, warn=lambda m: None).frames.astype(int)
    assert np.abs(a - b).mean() < 6


def test_a_checkpoint_header_is_read_once(tiny_ckpt, t2v_run, monkeypatch):
    """Detection, format checks and building share one header read (claims -> header -> build);
    the tensors are then read by safetensors.torch.load_file, which is not counted here."""
    import safetensors

    from svdcli.sample.pipeline import load_model

    opened = []
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    for path in (tiny_ckpt, t2v_run):
        opened.clear()
        model = load_model(path)
        assert model.family.name == "svd"
        assert opened == [str(path)], opened


def test_temporal_prompt_through_the_cli(t2v_run, tmp_path):
    """`svd sample --temporal-prompt`: the same text as --prompt is the plain prompt exactly;
    another text changes the video (it reaches the temporal cross-attention of the export)."""
    from PIL import Image

    def frames(name, *extra):
        out = tmp_path / name
        result = _run("--prompt", "a red ball rolling", "--checkpoint", t2v_run, "--steps", 2, "--out", out,
                      "--format", "png", "--no-progress", *extra)
        assert result.exit_code == 0, result.output
        return np.stack([np.asarray(Image.open(p), dtype=int) for p in sorted(out.glob("*.png"))])

    plain = frames("plain")
    same = frames("same", "--temporal-prompt", "a red ball rolling")
    other = frames("other", "--temporal-prompt", "the camera pans right")
    assert np.abs(plain - same).max() <= 1  # uint8 rounding of ulp-level differences
    assert np.abs(other - plain).mean() > 1.0, np.abs(other - plain).mean()   # measured: 12.6 uint8 levels


def test_edm_churn_through_svd_sample(random_pipe, tiny_ckpt, cond_png, tmp_path):
    """--s-churn runs EDM's Algorithm 2 in the Euler sampler: the same seed gives the same video,
    another seed another one, and S_churn = 0 is the deterministic sampler; a family with its
    own sampling loop refuses it by name."""
    from svdcli.sample.options import SampleOptions

    def frames(seed=0, **churn):
        opts = SampleOptions(steps=4, frames=2, seed=seed, **churn)
        return random_pipe.generate(_gradient(), opts, warn=lambda m: None).frames.astype(int)

    plain = frames()
    assert np.abs(frames(s_churn=0.0, s_noise=1.5) - plain).max() <= 1   # uint8 rounding of ulp-level differences
    churned = frames(s_churn=20.0, s_noise=1.007)
    assert np.abs(churned - plain).mean() > 0.1
    assert np.abs(frames(s_churn=20.0, s_noise=1.007) - churned).max() <= 1   # its noise from the seed
    assert np.abs(frames(seed=1, s_churn=20.0, s_noise=1.007) - churned).mean() > 0.1
    assert np.abs(frames(s_churn=20.0, s_tmin=100.0, s_tmax=200.0) - plain).max() <= 1  # no step in range
    result = _run("--image", cond_png, "--checkpoint", tiny_ckpt, "--out", tmp_path / "o.mp4", "--steps", 2,
                  "--s-churn", 10, "--no-progress")
    assert result.exit_code == 0 and "euler steps (churn 10, S_noise 1" in result.output, result.output
    with pytest.raises(Exception, match="--s-tmin 5 is above --s-tmax 1"):
        frames(s_churn=1.0, s_tmin=5.0, s_tmax=1.0)


def test_a_family_with_its_own_loop_refuses_churn():
    from svdcli.families import family_for
    from svdcli.families.base import SamplingDefaults
    from svdcli.families.vdm.sampling import VDMModel
    from svdcli.sample.options import SampleOptions, resolve

    model = VDMModel(family=family_for("vdm"), defaults=SamplingDefaults("vdm", 4, 4, 1.0, 1.0, 16, 16, sampler="ancestral"),
                     kind="vdm", denoiser=None, text=None, run=None)
    with pytest.raises(Exception, match="--s-churn: family vdm samples with its own loop"):
        resolve(SampleOptions(s_churn=10.0), model, None, print)
    assert resolve(SampleOptions(), model, None, print).s_churn == 0
