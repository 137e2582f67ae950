"""SVD-MV learns something: a tiny model trained on orbits of a few procedural objects beats
copying the input view (PSNR and LPIPS) on the held-out views of held-out objects.

Slow (minutes on a CPU): renders ten objects, fits a tiny VAE to the training orbits (a random VAE
does not reconstruct images, and the samples are judged in pixels), trains the tiny multiview
model on eight objects' orbits and samples the two others from their first view. The LPIPS here
runs on torchvision's VGG16 file when it is in the torch cache, otherwise on a random backbone
(then it compares model and copy within this run only). Last run (dev-cpu, shared, 25 min):
model PSNR 18.02 / LPIPS 0.0266 against copying 15.33 / 0.0327 (random backbone).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from render_helpers import blender_or_skip
from test_train_helpers import one_thread, run  # noqa: F401 - one_thread is an autouse fixture

VIEWS, SIZE, ELEVATION = 8, 64, 15.0


def fit_tiny_vae(orbits: np.ndarray, steps: int, seed: int = 0):
    """A tiny VideoAutoencoder fitted to (N, V, H, W, 3) uint8 orbits (L1 + a light KL), two orbits
    a step, each decoded as one V-frame video: the decoder is temporal and `svd sample` decodes the
    V views together, so a decoder fitted on single frames (T = 1, its temporal layers seeing only
    zero padding) does not decode the model's orbits."""
    from svdcli.models.vae import VAEConfig, VideoAutoencoder, posterior_sample

    torch.manual_seed(seed)
    vae = VideoAutoencoder(VAEConfig.tiny())
    n, views = orbits.shape[:2]
    x_all = torch.from_numpy(orbits).permute(0, 1, 4, 2, 3).float() / 127.5 - 1     # (N, V, 3, H, W)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = x_all[torch.randint(n, (2,), generator=g)].flatten(0, 1)                 # video-major
        moments = vae.encode_moments(x)
        z = posterior_sample(moments, g)
        mean, logvar = moments.chunk(2, dim=1)
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean()
        loss = (vae.decode(z, views) - x).abs().mean() + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae.eval()


def _views(folder) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


@pytest.mark.slow
def test_a_tiny_multiview_model_beats_copying_the_input_view_on_held_out_objects(tmp_path):
    blender = blender_or_skip()
    from typer.testing import CliRunner

    from svdcli.cli.main import app
    from svdcli.eval.multiview import MetricModels, evaluate, find_pairs
    from svdcli.families.svd.formats import save_ours
    from svdcli.models.perceptual import default_backbone_path
    from svdcli.models.vae import VAEConfig
    from svdcli.render.orbits import RenderSettings, render_orbits
    from svdcli.render.procedural import write_objects
    from svdcli.shards.pack import PackConfig, run_pack

    paths = write_objects(tmp_path / "all", 10, seed=0)
    for split, chosen in (("train", paths[:8]), ("test", paths[8:])):
        (tmp_path / split).mkdir()
        for p in chosen:
            shutil.copy(p, tmp_path / split / p.name)
    settings = RenderSettings(views=VIEWS, resolution=SIZE, elevation=(ELEVATION, ELEVATION), samples=16,
                              denoise=False)
    for split in ("train", "test"):
        assert not render_orbits(tmp_path / split, tmp_path / f"r_{split}", settings, blender=blender,
                                 workers=2).failed
    train_orbits = np.stack([_views(p / "views") for p in sorted((tmp_path / "r_train").iterdir()) if p.is_dir()])
    vae = fit_tiny_vae(train_orbits, steps=600)
    save_ours(tmp_path / "vae.safetensors", {"vae": vae.state_dict()}, vae_config=VAEConfig.tiny())
    run_pack(tmp_path / "r_train" / "orbits.parquet", tmp_path / "shards",
             PackConfig(size=(SIZE, SIZE), frames=VIEWS, min_frames=VIEWS, format="npy", shard_size=2),
             workers=1, progress=False)
    run(tmp_path / "run", tmp_path / "shards", stage="multiview", frames=VIEWS, steps=400,
        weights=str(tmp_path / "vae.safetensors"), **{"optim.lr": 5e-4, "ema.decay": 0.95,
                                                      "noise.p_mean": 0.0, "noise.p_std": 1.2})
    runner = CliRunner()
    for obj in (p.stem for p in paths[8:]):   # the held-out objects
        truth = tmp_path / "r_test" / obj
        result = runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "-i", str(truth / "views" / "000.png"),
                                     "--multiview", "--elevation", str(ELEVATION), "--steps", "12", "--cfg", "1.5",
                                     "--out", str(tmp_path / "gen" / obj), "--no-progress"])
        assert result.exit_code == 0, result.output
        (tmp_path / "copy" / obj / "views").mkdir(parents=True)
        for k in range(VIEWS):
            shutil.copy(truth / "views" / "000.png", tmp_path / "copy" / obj / "views" / f"{k:03d}.png")
    backbone = str(default_backbone_path()) if default_backbone_path().is_file() else "random"
    models = MetricModels.load(backbone, "ViT-B-32", "random")
    model = evaluate(find_pairs(tmp_path / "gen", tmp_path / "r_test"), models)["mean"]
    copy = evaluate(find_pairs(tmp_path / "copy", tmp_path / "r_test"), models)["mean"]
    print(json.dumps({"model": model, "copy": copy, "lpips_backbone": backbone}))
    assert model["psnr"] > copy["psnr"]
    assert model["lpips"] < copy["lpips"]
