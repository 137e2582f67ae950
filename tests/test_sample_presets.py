"""Official checkpoints: the full SVD layout builds, svd vs svd_xt defaults, frame counts."""
import pytest

from svdcli.families import family_for

from svdcli.errors import SvdError
from svdcli.families.svd.presets import PRESETS, guess_official_model, own_defaults
from svdcli.sample.options import check_frames


def _official_meta_parts(reference_dir):
    """The official single-file checkpoint's keys and shapes, as meta tensors (no weights needed)."""
    import torch

    from svdcli.families.svd.formats import split_official

    state = {}
    for line in (reference_dir / "svd_checkpoint_keys.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        state[key] = torch.empty(dims, device="meta")
    return split_official(state)


def test_official_layout_builds_every_part_strictly(reference_dir, tmp_path):
    from svdcli.families.svd.checkpoint import Checkpoint
    from svdcli.families.svd.checkpoint import infer_unet_config, infer_vae_config
    from svdcli.families.svd.loading import assemble

    parts, unexpected = _official_meta_parts(reference_dir)
    assert not unexpected
    ckpt = Checkpoint("official", parts, infer_unet_config(parts["unet"]), infer_vae_config(parts["vae"]))
    loaded = assemble(ckpt, tmp_path / "svd_xt.safetensors", {}, family_for("svd"))
    assert loaded.defaults == PRESETS["svd_xt"]
    assert loaded.unet.cfg.context_dim == 1024 and loaded.unet.cfg.adm_in_channels == 768
    assert sum(p.numel() for p in loaded.unet.parameters()) == 1_524_623_082
    assert assemble(ckpt, tmp_path / "svd.safetensors", {}, family_for("svd")).defaults.name == "svd"


@pytest.mark.parametrize("name,expected", [
    ("svd.safetensors", "svd"), ("svd_xt.safetensors", "svd_xt"), ("svd_xt_1_1.safetensors", "svd_xt"),
    ("stable-video-diffusion-img2vid-xt", "svd_xt"), ("stable-video-diffusion-img2vid", "svd"),
    ("next_model.safetensors", "svd"),
])
def test_svd_or_xt_from_the_name(name, expected, tmp_path):
    assert guess_official_model(tmp_path / name) == expected


def test_official_defaults_are_the_official_scripts():
    svd, xt = PRESETS["svd"], PRESETS["svd_xt"]
    assert (svd.frames, svd.steps, svd.min_cfg, svd.max_cfg) == (14, 25, 1.0, 2.5)
    assert (xt.frames, xt.steps, xt.min_cfg, xt.max_cfg) == (25, 30, 1.5, 3.0)
    assert (svd.width, svd.height, svd.decode_chunk) == (1024, 576, 14)


def test_frame_counts_the_model_cannot_do():
    warnings = []
    check_frames(PRESETS["svd"], 14, warnings.append)
    assert not warnings
    check_frames(PRESETS["svd"], 20, warnings.append)
    assert len(warnings) == 1 and "trained on 14" in warnings[0]
    with pytest.raises(SvdError, match="more than twice"):
        check_frames(PRESETS["svd"], 40, warnings.append)
    with pytest.raises(SvdError, match="at least 2"):
        check_frames(PRESETS["svd_xt"], 1, warnings.append)


def test_own_checkpoint_defaults_come_from_its_training():
    d = own_defaults({"num_frames": 8, "width": 384, "height": 256})
    assert (d.frames, d.width, d.height, d.trained_frames) == (8, 384, 256, 8)


def test_xt_from_a_hugging_face_cache_folder(tmp_path):
    snap = tmp_path / "models--stabilityai--stable-video-diffusion-img2vid-xt" / "snapshots" / "abc123"
    assert guess_official_model(snap) == "svd_xt"
    assert guess_official_model(tmp_path / "models--stabilityai--stable-video-diffusion-img2vid" / "snapshots" / "abc") == "svd"
