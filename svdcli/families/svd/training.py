"""SVD's training methods (svdcli.families.base.Family): the denoiser of a training stage, the
frozen encoders, the batch, the exported file and the VAE of `svd pack --latents`."""
from __future__ import annotations

from pathlib import Path

from svdcli.families.svd import batch, encoders as svd_encoders, network


def build(family, cfg, init: Path | None = None):
    return network.build_denoiser(cfg, init)


def encoders(family, cfg, device: str):
    return svd_encoders.build_encoders(cfg.family_config, cfg.seed, structure_only=device == "meta").to(device)


def training_vae(family, encoders):
    return encoders.vae


def prepare(family, video, meta, encoders, cfg, gen, device):
    return batch.prepare_batch(video, meta, encoders, cfg, gen, device)


def save(family, path: Path, state, cfg, metadata: dict[str, str]) -> None:
    """Our format (`unet.*` tensors, the UNet config in the metadata), which `svd sample`,
    `svd convert` and `--init` read; the denoiser's `net.` is the UNet."""
    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.formats import save_ours

    unet = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    save_ours(path, {"unet": unet}, unet_config=unet_config(cfg.family_config.model, cfg.stage),
              extra_metadata=metadata)


def saved_state(family, path: Path):
    from safetensors.torch import load_file

    return {"net." + k[len("unet."):]: v for k, v in load_file(str(path)).items() if k.startswith("unet.")}


def pack_vae(family, source: str):
    return svd_encoders.pack_vae(source)
