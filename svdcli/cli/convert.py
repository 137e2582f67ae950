"""`svd convert` and `svd inspect`: SVD checkpoint formats (official sgm file, diffusers folder,
SD 2.1, ours). Parsing and printing only; the work is in svdcli.families.svd (formats.py,
diffusers_folder.py, inflate.py)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from svdcli.cli.common import console, lora_pairs, user_errors

HEAD_HELP = ("Attention head width of the UNet (channels per head). Not visible in the weights of "
             "official / SD 2.1 files; 64 for SVD and SD 2.1.")


class Target(str, Enum):
    ours = "ours"
    diffusers = "diffusers"


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
    app.command("inspect")(inspect)


@user_errors
def convert(
    src: Path = typer.Argument(..., metavar="SRC", help="Checkpoint to read: an official SVD/SVD-XT .safetensors, a "
                               "diffusers folder, an SD 2.1 .safetensors/.ckpt, or one of ours."),
    to: Target = typer.Option(..., "--to", help="ours: one .safetensors with the configs inside; "
                              "diffusers: a StableVideoDiffusionPipeline folder (unet/, vae/, "
                              "image_encoder/, feature_extractor/, scheduler/, model_index.json; "
                              "unet/ and vae/ only when the source has no conditioner)."),
    out: Path = typer.Option(..., "--out", help="Output file (ours) or folder (diffusers)."),
    num_head_channels: int = typer.Option(64, help=HEAD_HELP),
    merge_lora: list[Path] = typer.Option([], "--merge-lora", help="LoRA file (`svd train ... --set lora.rank=16`: "
                                          "RUN_DIR/lora.safetensors) to fold into the UNet (repeatable); refused "
                                          "unless SRC is the base it was trained on."),
    lora_scale: list[float] = typer.Option([], "--lora-scale", help="Strength of each --merge-lora, in order (default 1.0)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Convert a checkpoint between formats. An SD 2.1 image checkpoint becomes a video UNet whose
    temporal layers start as the identity (it reproduces the image model frame by frame). With
    --merge-lora, the LoRAs are folded into the UNet weights: W + scale * (alpha / r) B A."""
    from rich.markup import escape

    from svdcli.errors import SvdError
    from svdcli.families.svd import formats

    if out.exists() and not force:
        raise SvdError(f"{out} exists; pass --force to overwrite it")
    pairs = lora_pairs(merge_lora, lora_scale, "--merge-lora")
    con = console()
    with con.status(f"reading {src}"):
        ckpt = formats.load_checkpoint(src, num_head_channels=num_head_channels)
    if ckpt.kind == "sd21":
        ckpt = _inflated(ckpt, con)
    _check_unet(ckpt)
    metadata = {"source": str(src), "source_format": ckpt.kind}
    if merge_lora:
        metadata.update(_merge_loras(ckpt, src, pairs, con))
    if ckpt.unexpected:
        con.print(f"[yellow]warning:[/] {len(ckpt.unexpected)} source keys belong to no part and are "
                  f"not converted (e.g. {escape(ckpt.unexpected[0])}); `svd inspect` lists them", markup=True)
    notes = list(ckpt.notes)
    with con.status(f"writing {out}"):
        if to is Target.ours:
            formats.save_ours(out, ckpt.parts, ckpt.config, ckpt.vae_config, metadata)
            written = sorted(ckpt.parts)
        else:
            from svdcli.families.svd.diffusers_folder import save_diffusers

            written, write_notes = save_diffusers(out, ckpt)
            notes += write_notes
    for note in notes + [f"{part} not written" for part in sorted(set(ckpt.parts) - set(written))
                         if not any(n.startswith(f"{part} not written") for n in notes)]:
        con.print(f"note: {note}")
    con.print(f"wrote {out} ({to.value}) from {ckpt.kind} checkpoint: {', '.join(written)}")


def _merge_loras(ckpt, src: Path, pairs: list[tuple[Path, float]], con) -> dict[str, str]:
    """Fold the LoRAs into ckpt's UNet (in place); the metadata that keeps the output samplable
    (a training export's run config, our own file's sampling setup) and records the merge."""
    import json

    from svdcli.errors import SvdError
    from svdcli.families.base import read_header
    from svdcli.families.svd.lora import merge_into

    if "unet" not in ckpt.parts:
        raise SvdError(f"{src} holds no UNet weights to merge a LoRA into")
    with con.status("merging LoRA weights"):
        ckpt.parts["unet"], _ = merge_into(ckpt.parts["unet"], pairs, f"{src}")
    kept = {}
    if ckpt.kind == "ours" and src.is_file():
        keep = ("family", "train_config", "step", "ema", "sample_defaults", "conditioner_config")
        kept = {k: v for k, v in read_header(src).metadata.items() if k in keep}
        if "conditioner_config" in kept and ckpt.clip_arch:  # a model-config file beside SRC: its full path
            kept["conditioner_config"] = json.dumps({**json.loads(kept["conditioner_config"]), "clip_arch": ckpt.clip_arch})
    kept["merged_lora"] = json.dumps([{"file": str(f), "scale": s} for f, s in pairs])
    return kept


def _inflated(ckpt, con):
    """SD 2.1 -> video UNet (SVD config); the image VAE and text encoder are not carried over."""
    from svdcli.families.svd.checkpoint import Checkpoint
    from svdcli.families.svd.inflate import inflate_image_unet
    from svdcli.models.config import UNetConfig

    cfg = UNetConfig.svd() if ckpt.config.model_channels == 320 else \
        UNetConfig.from_dict({**ckpt.config.to_dict(), "in_channels": 8})
    with con.status("inflating the image UNet into the video UNet"):
        unet = inflate_image_unet(ckpt.parts["unet"], cfg)
    dropped = sorted(set(ckpt.parts) - {"unet"})
    notes = ckpt.notes + [f"SD 2.1 parts not converted: {', '.join(dropped)}"] if dropped else ckpt.notes
    return Checkpoint("sd21", {"unet": unet}, cfg, notes=notes + [
        "temporal layers initialised as identity; input channels 4-7 zero"])


def _check_unet(ckpt) -> None:
    from svdcli.errors import SvdError
    from svdcli.families.svd.checkpoint import compare_keys

    if "unet" not in ckpt.parts:
        return
    problems = compare_keys(ckpt.parts["unet"], ckpt.config)
    if any(problems.values()):
        detail = "; ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in problems.items() if v)
        raise SvdError(f"the UNet weights do not match their config: {detail}; "
                       "run `svd inspect` for the full list")


@user_errors
def inspect(
    ckpt_path: Path = typer.Argument(..., metavar="CKPT", help="Checkpoint file or diffusers folder."),
    num_head_channels: int = typer.Option(64, help=HEAD_HELP),
    show: int = typer.Option(20, help="List at most this many missing/unexpected keys per kind (0: all)."),
) -> None:
    """Show a checkpoint's format, parameter counts by part, UNet config, and the keys that are
    missing from it or that no part of our model expects."""
    from svdcli.families.svd.checkpoint import parameter_counts
    from svdcli.families.svd.formats import load_checkpoint

    ckpt = load_checkpoint(ckpt_path, num_head_channels=num_head_channels)
    echo = typer.echo
    echo(f"{ckpt_path}: {ckpt.kind} checkpoint")
    for part, n in sorted(parameter_counts(ckpt).items()):
        echo(f"  {part:<16} {n:>15,d} parameters")
    if ckpt.config is not None:
        c = ckpt.config
        echo(f"  unet config: in {c.in_channels}, out {c.out_channels}, channels {c.level_channels()}, "
             f"context {c.context_dim}, vector {c.adm_in_channels}, head width {c.num_head_channels}")
    for note in ckpt.notes:
        echo(f"  note: {note}")
    problems = _key_report(ckpt)
    if ckpt.unexpected:
        problems["unexpected (no part)"] = ckpt.unexpected
    if not any(problems.values()):
        echo("  keys: all present, none unexpected")
    for kind, keys in problems.items():
        if keys:
            echo(f"  {kind}: {len(keys)}")
            for key in keys[: show or None]:
                echo(f"    {key}")
            if show and len(keys) > show:
                echo(f"    ... {len(keys) - show} more (--show 0 lists all)")


def _key_report(ckpt) -> dict[str, list[str]]:
    """Per part: missing / unexpected / mismatched keys against our modules built on meta."""
    import torch

    from svdcli.families.svd.checkpoint import compare_keys

    report: dict[str, list[str]] = {}
    if "unet" in ckpt.parts and ckpt.kind != "sd21":
        for kind, keys in compare_keys(ckpt.parts["unet"], ckpt.config).items():
            report[f"unet {kind}"] = keys
    if "vae" in ckpt.parts and ckpt.vae_config is not None and ckpt.kind != "sd21":
        from svdcli.models.vae import VideoAutoencoder

        with torch.device("meta"):
            own = VideoAutoencoder(ckpt.vae_config).state_dict()
        have = ckpt.parts["vae"]
        report["vae missing"] = sorted(set(own) - set(have))
        report["vae unexpected"] = sorted(set(have) - set(own))
    return report
