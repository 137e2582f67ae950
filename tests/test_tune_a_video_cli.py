"""Tune-A-Video through the CLI: `svd tune` on a synthetic moving clip (the training engine, a
delta file), `svd sample --tuned --invert`, refusal of another base; and, slow, a one-shot run
that lowers the loss and whose inversion keeps the clip's motion better than random noise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from svdcli.cli.main import app
from tav_helpers import FRAMES, SIZE, image_base, moving_square, write_clip

PROMPT = "a yellow square moves right"
STEP = 6   # pixels a frame: frames 0, 2, 4, 6 (the tuned ones, --frame-stride 2) stay inside 64 px


def _tune(tmp_path: Path, steps: int, lr: float = 3e-5, run: str = "run") -> tuple[Path, Path, Path]:
    base = image_base(tmp_path / "image.safetensors")
    clip = write_clip(tmp_path / "clip.mp4", moving_square(frames=2 * FRAMES, step=STEP))
    out = tmp_path / run
    result = CliRunner().invoke(app, ["tune", "--video", str(clip), "--prompt", PROMPT, "--base", str(base),
                                      "--out", str(out), "--frames", str(FRAMES), "--size", str(SIZE),
                                      "--steps", str(steps), "--lr", str(lr), "--no-progress"])
    assert result.exit_code == 0, result.output
    return base, clip, out


def test_svd_tune_then_svd_sample_tuned_and_inverted(tmp_path):
    import av

    from svdcli.families.tune_a_video.inflate import is_tuned

    base, clip, run = _tune(tmp_path, steps=2)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    start = next(line for line in log if line.get("event") == "start")
    delta_file = run / "checkpoints" / "step_000002" / "ema.safetensors"
    from safetensors import safe_open

    with safe_open(str(delta_file), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        n_delta = sum(f.get_tensor(k).numel() for k in keys)
    assert keys and all(is_tuned(k) for k in keys)
    assert start["trainable"] == n_delta < start["parameters"] / 5   # only the delta trained
    from svdcli.families.tune_a_video.base import file_sha256

    assert meta["base_sha256"] == file_sha256(base)
    recipe = json.loads((run / "tune.yaml").read_text())
    assert recipe["optim"]["weight_decay"] == 0.01 and recipe["frame_stride"] == 2   # the official defaults
    centres = _square_x(_packed_frames(run))                # square at 8 + STEP t, 20 px wide, t = 0, 2, 4, 6
    assert len(centres) == FRAMES and all(abs(c - (8 + 2 * STEP * k + 9.5)) < 2 for k, c in enumerate(centres)), centres

    out = tmp_path / "panda.mp4"
    args = ["sample", "--family", "tune_a_video", "--checkpoint", str(base), "--tuned", str(run), "--prompt",
            "a panda is skiing", "--invert", str(clip), "--steps", "2", "--cfg", "3", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)

    other = image_base(tmp_path / "other.safetensors", seed=1)   # same layout, other weights
    result = CliRunner().invoke(app, ["sample", "--family", "tune_a_video", "--checkpoint", str(other), "--tuned",
                                      str(run), "--steps", "2", "--out", str(tmp_path / "x.mp4"), "--no-progress",
                                      "--prompt", "x"])
    assert result.exit_code != 0 and "tuned on another base" in " ".join(result.output.split())  # rich wraps


def _packed_frames(run: Path) -> "np.ndarray":
    """The frames `svd tune` packed for training: (T, H, W, 3) uint8 from the run's one shard."""
    import io
    import tarfile

    import numpy as np

    with tarfile.open(next((run / "data" / "shards").glob("*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".npy") and "latents" not in m.name)
        return np.load(io.BytesIO(tar.extractfile(member).read()))


def _square_x(frames) -> list[float]:
    """Centre column of the yellow square in each frame."""
    import numpy as np

    yellow = (frames[..., 0] > 200) & (frames[..., 1] > 200) & (frames[..., 2] < 100)   # (T, H, W)
    return [float(np.nonzero(m)[1].mean()) for m in yellow]


def _fixed_loss(model, x0, cond, draws: int = 6) -> float:
    """The tuning loss on fixed (sigma, noise) draws, so two models compare on the same ones."""
    from svdcli.families.base import TrainBatch

    g = torch.Generator().manual_seed(11)
    batch = TrainBatch(x0, cond, FRAMES)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            sigma = (-1.2 + 1.2 * torch.randn(1, generator=g)).exp()
            total += float(model.family.loss(model.denoiser, batch, sigma, torch.randn(x0.shape, generator=g)).mean())
    return total / draws


def _motion_agreement(x: torch.Tensor, x0: torch.Tensor) -> float:
    """Cosine similarity of the frame-to-frame latent differences (the motion) with the source's."""
    a, b = (x[1:] - x[:-1]).flatten(), (x0[1:] - x0[:-1]).flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.slow
def test_one_shot_tuning_lowers_the_loss_and_inversion_keeps_the_motion(tmp_path):
    from svdcli.families import family_for
    from svdcli.families.base import read_header
    from svdcli.families.tune_a_video.network import make_cond
    from svdcli.families.tune_a_video.sampling import read_clip, source_latents
    from svdcli.sample.options import SampleOptions, resolve

    base, clip, run = _tune(tmp_path, steps=40, lr=3e-3)
    family = family_for("tune_a_video")
    tuned = family.load(read_header(run / "checkpoints" / "step_000040" / "ema.safetensors"))
    untuned = family.load(read_header(base))
    x0 = source_latents(tuned, read_clip(clip, FRAMES, SIZE, SIZE, stride=2), "cpu")
    cond = make_cond(tuned.base.text([PROMPT]).float(), FRAMES, tuned.base, x0.shape[-2:])
    before, after = _fixed_loss(untuned, x0, cond), _fixed_loss(tuned, x0, cond)
    print(f"fixed-draw tuning loss: {before:.4f} before, {after:.4f} after 40 steps")
    assert after < before   # measured: 0.5941 -> 0.5751 (frames 0, 2, 4, 6 of the clip)

    agreement = {}
    for start in ("inversion", "noise"):
        opts = resolve(SampleOptions(frames=FRAMES, steps=20, min_cfg=1.0, max_cfg=1.0, width=SIZE, height=SIZE,
                                     prompt=PROMPT, invert=clip if start == "inversion" else None),
                       tuned, None, print)
        inputs = family.sampling_inputs(tuned, None, opts, "cpu", torch.float32)
        sigmas = family.sigmas(tuned, opts.steps, "cpu")
        with torch.no_grad():
            x = family.sample(tuned, inputs, opts, family.guided_denoiser(tuned, opts, None), sigmas, None)
        agreement[start] = _motion_agreement(x, x0)
    print(f"motion agreement with the source (cosine of latent frame differences): {agreement}")
    assert agreement["inversion"] > agreement["noise"] + 0.2   # measured: 0.919 vs 0.027


def test_svd_tune_refuses_a_clip_too_short_for_the_stride_and_a_stride_override(tmp_path):
    base = image_base(tmp_path / "image.safetensors")
    clip = write_clip(tmp_path / "clip.mp4", moving_square(frames=2 * FRAMES, step=STEP))   # 8 frames
    args = ["tune", "--video", str(clip), "--prompt", PROMPT, "--base", str(base), "--out", str(tmp_path / "run"),
            "--frames", str(FRAMES), "--size", str(SIZE), "--steps", "1", "--no-progress"]
    result = CliRunner().invoke(app, args + ["--frame-stride", "3"])             # frames 0..9 needed
    assert result.exit_code == 2 and "needs 10" in " ".join(result.output.split())
    result = CliRunner().invoke(app, args + ["--set", "frame_stride=3"])
    assert result.exit_code == 2 and "as --frame-stride" in " ".join(result.output.split())
