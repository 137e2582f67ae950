"""The Family seam: a model family defined only here (a tiny unconditional pixel-space video
denoiser) trains through the real `svd train --family toy` and samples through `svd sample`,
with its family detected from the checkpoint, and nothing in train/ or sample/ knows it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.families import register, unregister
from svdcli.families.base import (Family, LoadedModel, SamplingDefaults, SamplingInputs, TrainBatch,
                                  TrainedRun)
from test_train_helpers import make_shards, one_thread  # noqa: F401

STEPS, FRAMES, SIZE = 10, 2, 32


@dataclass
class ToyConfig:
    channels: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ToyConfig":
        return cls(channels=int(values.get("channels", 16)))


class ToyNet(nn.Module):
    """F(c_in x, c_noise): two 3x3 convs with the noise level added in between; ignores any cond."""

    def __init__(self, channels: int):
        super().__init__()
        self.inp, self.out = nn.Conv2d(3, channels, 3, padding=1), nn.Conv2d(channels, 3, 3, padding=1)
        self.noise = nn.Linear(1, channels)

    def forward(self, x, c_noise, crossattn=None, vector=None, num_video_frames=1, image_only_indicator=None):
        h = self.inp(x) + self.noise(c_noise.reshape(-1, 1).to(x.dtype))[:, :, None, None]  # (N, C, H, W)
        return self.out(torch.nn.functional.silu(h))


@dataclass(kw_only=True)
class ToyModel(LoadedModel):
    net: nn.Module

    def modules(self) -> list[nn.Module]:
        return [self.net]


class ToyFamily(Family):
    name = "toy"
    stages = ("video",)
    config_type = ToyConfig

    def build(self, cfg, init=None):
        from svdcli.diffusion.edm import Denoiser

        torch.manual_seed(cfg.seed)
        return Denoiser(ToyNet(cfg.family_config.channels))

    def prepare(self, video, meta, encoders, cfg, gen, device) -> TrainBatch:
        b, t = video.shape[:2]
        return TrainBatch(video.reshape(b * t, *video.shape[2:]).to(device), {}, t)  # pixels are x0

    def save(self, path: Path, state, cfg, metadata) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)

    def saved_state(self, path: Path):
        from safetensors.torch import load_file

        return load_file(str(path))

    def load(self, header) -> ToyModel:
        run = TrainedRun.from_metadata(header.metadata, default_family=self.name)
        net = ToyNet(ToyConfig.from_dict(run.values).channels)
        net.load_state_dict({k[len("net."):]: v for k, v in self.saved_state(header.path).items()})
        defaults = SamplingDefaults("toy", frames=run.frames, steps=4, min_cfg=1.0, max_cfg=1.0, width=run.width,
                                    height=run.height, trained_frames=run.frames, size_multiple=8)
        return ToyModel(family=self, defaults=defaults, kind="toy", net=net.eval())

    def sampling_inputs(self, model, image, opts, device, dtype) -> SamplingInputs:
        gen = torch.Generator().manual_seed(opts.seed)
        noise = torch.randn(opts.frames, 3, opts.height, opts.width, generator=gen)
        return SamplingInputs(noise.to(device), {}, {}, fps=8.0)

    def guided_denoiser(self, model, opts, autocast_dtype):
        from svdcli.diffusion.edm import Denoiser

        denoiser = Denoiser(model.net)
        return lambda x, sigma, *, cond, uncond: denoiser(x, sigma, cond, opts.frames)

    def decode(self, model, x, opts):
        return x.clamp(-1.0, 1.0)


@pytest.fixture()
def toy():
    family = register(ToyFamily())
    yield family
    unregister(family.name)


def test_a_family_defined_in_a_test_trains_and_samples_through_the_cli(toy, tmp_path):
    import av

    shards = make_shards(tmp_path / "data")
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(json.dumps({  # JSON is YAML
        "family": "toy", "stage": "video", "channels": 8, "steps": STEPS, "precision": "fp32", "log_every": 1,
        "checkpoint_every": STEPS, "optim": {"lr": 3e-3}, "ema": {"decay": 0.5},
        "data": {"frames": FRAMES, "height": SIZE, "width": SIZE, "batch_size": 2, "num_workers": 0,
                 "shuffle_buffer": 4}}))
    runner, run = CliRunner(), tmp_path / "run"
    result = runner.invoke(app, ["train", "--family", "toy", "--stage", "video", "--config", str(recipe),
                                 "--data", str(shards), "--out", str(run), "--no-progress", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    export = run / "checkpoints" / f"step_{STEPS:06d}" / "ema.safetensors"
    trained = toy.saved_state(export)
    from svdcli.train.config import load_config

    initial = toy.build(load_config(recipe)).state_dict()
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)  # the steps reached the weights

    out = tmp_path / "toy.mp4"
    result = runner.invoke(app, ["sample", "--checkpoint", str(run), "--steps", "3", "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"toy checkpoint (toy): {FRAMES} frames {SIZE}x{SIZE}" in result.output
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert float(container.streams.video[0].average_rate) == 8
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)


def test_svd_options_are_refused_by_a_family_that_has_none(toy, tmp_path):
    """A family's sampling options are its own: --fps-id is an SVD option, not a common one."""
    from svdcli.sample.options import SampleOptions, resolve

    model = ToyModel(family=toy, defaults=SamplingDefaults("toy", 2, 3, 1.0, 1.0, 32, 32), kind="toy",
                     net=ToyNet(4))
    with pytest.raises(Exception, match="takes no --fps-id"):
        resolve(SampleOptions(fps_id=3), model, None, print)
    assert asdict(resolve(SampleOptions(), model, None, print).family_options) == {}
