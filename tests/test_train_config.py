"""Training configs: every shipped recipe loads and validates; mistakes fail early and clearly."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.train.config import ConfigError, load_config
from test_train_helpers import REPO

RECIPES = sorted((REPO / "pipelines" / "train").glob("*.yaml"))
DS_CONFIGS = sorted((REPO / "pipelines" / "deepspeed").glob("*.json"))


def test_every_shipped_recipe_is_present():
    assert {p.stem for p in RECIPES} == {"image", "video", "finetune", "camera_lora", "multiview"}
    assert {p.stem for p in DS_CONFIGS} == {"zero1", "zero2", "zero3", "zero2_offload"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_load_validate_and_carry_the_paper_values(path):
    cfg = load_config(path)
    if path.stem == "camera_lora":  # SVD paper 6.2: rank-16 temporal-attention LoRA, ~5k steps
        assert (cfg.stage, cfg.steps, cfg.lora.rank, cfg.lora.target) == ("finetune", 5000, 16, "temporal_attention")
        assert (cfg.noise.p_mean, cfg.noise.p_std) == (0.7, 1.6)
        return
    assert cfg.stage == path.stem and cfg.family == "svd" and cfg.family_config.model == "svd"
    if cfg.stage == "image":
        assert cfg.frames == 1 and (cfg.noise.p_mean, cfg.noise.p_std) == (-1.2, 1.0)
    if cfg.stage == "video":
        assert (cfg.data.frames, cfg.data.height, cfg.data.width) == (14, 256, 384)
        assert (cfg.noise.p_mean, cfg.noise.p_std, cfg.optim.lr) == (-1.2, 1.2, 1e-4)
    if cfg.stage == "finetune":
        assert (cfg.noise.p_mean, cfg.noise.p_std, cfg.optim.lr) == (0.7, 1.6, 3e-5)
        assert cfg.ema.enabled and cfg.ema.decay == 0.9999
        assert load_config(path, ["lora.rank=16"]).lora.rank == 16
    if cfg.stage == "multiview":  # SVD paper 4.5 / D.6: 21 views at 576x576, 12k steps, lr 1e-5
        assert (cfg.data.frames, cfg.data.height, cfg.data.width) == (21, 576, 576)
        assert (cfg.steps, cfg.optim.lr, cfg.family_config.cond.mode) == (12000, 1e-5, "i2v")


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.stem)
def test_shipped_deepspeed_configs_get_batch_precision_and_clipping_from_the_recipe(path):
    from svdcli.train.engine import load_ds_config

    cfg = load_config(RECIPES[0], ["data.batch_size=3", "optim.grad_clip=0.5", "precision=fp32"])
    ds = load_ds_config(path, cfg, world_size=2)
    assert ds["zero_optimization"]["stage"] == int(path.stem[len("zero")])
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": False} and "optimizer" not in ds


def test_overrides_are_typed_and_unknown_keys_are_named(tmp_path):
    cfg = load_config(REPO / "pipelines/train/video.yaml", ["optim.lr=3e-5", "steps=7", "freeze_spatial=true",
                                                         "optim.betas=0.9,0.99"])
    assert (cfg.optim.lr, cfg.steps, cfg.family_config.freeze_spatial, cfg.optim.betas) == (3e-5, 7, True, (0.9, 0.99))
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config(REPO / "pipelines/train/video.yaml", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="steps"):
        load_config(REPO / "pipelines/train/video.yaml", ["steps=many"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: video\ndata: {height: 250}\n")
    with pytest.raises(ConfigError, match="multiples of 64"):
        load_config(bad)
    bad.write_text("stage: video\ndata: {height: 64, width: 96}\n")  # latent 8x12 cannot halve 3 times
    with pytest.raises(ConfigError, match="multiples of 64"):
        load_config(bad)
    with pytest.raises(ConfigError, match="is a 'video' config"):
        load_config(REPO / "pipelines/train/video.yaml", stage="finetune")
    with pytest.raises(ConfigError, match="image stage"):
        load_config(REPO / "pipelines/train/image.yaml", ["cond.mode=i2v"])


def test_cli_user_mistakes_are_one_line_errors(tmp_path):
    runner = CliRunner()
    base = ["train", "--stage", "video", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]
    r = runner.invoke(app, base + ["--config", str(REPO / "pipelines/train/video.yaml"), "--set", "optim.lrr=1"])
    assert r.exit_code == 2 and "optim.lrr" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, base + ["--config", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(app, base + ["--config", str(REPO / "pipelines/train/video.yaml"), "--set", "model=tiny"])
    assert r.exit_code == 2 and "training data not found" in r.output
    assert not (tmp_path / "run" / "checkpoints").exists()
    r = runner.invoke(app, ["train", "--help"])
    assert r.exit_code == 0 and "--resume" in r.output and "hostfile" in r.output


def test_full_size_model_without_weights_names_the_file_to_fetch(tmp_path):
    import tarfile

    data = tmp_path / "shards"
    data.mkdir()
    (tmp_path / "x.json").write_text("{}")
    with tarfile.open(data / "000000.tar", "w") as tar:
        tar.add(tmp_path / "x.json", arcname="k.json")
    r = CliRunner().invoke(app, ["train", "--stage", "finetune", "--config", str(REPO / "pipelines/train/finetune.yaml"),
                                 "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "svd.safetensors" in r.output and "weights" in r.output


def test_demo_training_config_validates_as_a_tiny_video_run():
    cfg = load_config(REPO / "pipelines/demo/train.yaml", stage="video")
    assert cfg.family_config.model == "tiny" and cfg.stage == "video"
    assert cfg.data.height % 64 == 0 and cfg.data.width % 64 == 0


def test_family_comes_from_the_config_and_configs_without_one_are_svd(tmp_path):
    from svdcli.errors import SvdError
    from svdcli.train.config import config_from_dict, dump_yaml, read_yaml

    old = load_config(REPO / "pipelines/demo/train.yaml")  # written before families existed
    assert old.family == "svd" and old.family_config.model == "tiny"
    with pytest.raises(ConfigError, match="--family vdm but .* is a 'svd' config"):
        load_config(REPO / "pipelines/train/video.yaml", family="vdm")
    with pytest.raises(SvdError, match="unknown model family 'nosuch'"):
        load_config(REPO / "pipelines/demo/train.yaml", family="nosuch")
    with pytest.raises(ConfigError, match="training stages of family svd"):
        load_config(REPO / "pipelines/train/video.yaml", ["stage=oneshot"])
    # a run folder's config.yaml reads back as the same config, family keys at the top level
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(old))
    assert {"family", "model", "cond", "steps"} <= set(read_yaml(saved))
    assert config_from_dict(read_yaml(saved)).to_dict() == old.to_dict()
