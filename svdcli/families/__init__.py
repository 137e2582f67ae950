"""Model families and their registry: `family_for(name)`, `detect(header)`, `register(family)`.

    family = family_for("svd")                      # by name (`svd train --family svd`)
    family = detect(read_header("model.safetensors"))  # by what a checkpoint holds (`svd sample`)

A checkpoint written by `svd train` names its family in its metadata; any other checkpoint is
offered to every registered family's `claims`, in registration order. Built-in families are
registered below (one line each); `register` adds one at run time (a test's toy family).
Nothing here imports torch.
"""
from __future__ import annotations

from pathlib import Path

from svdcli.errors import SvdError
from svdcli.families.base import CheckpointHeader, Family, read_header

__all__ = ["Family", "detect", "family_for", "names", "pack_vae", "read_header", "register", "unregister"]

DEFAULT_FAMILY = "svd"  # what configs and checkpoints without a `family` are
_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make `family` known by its name (a second family of the same name replaces the first)."""
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Forget the family called `name` (a test's toy family, once the test is done)."""
    _FAMILIES.pop(name, None)


def names() -> list[str]:
    return list(_FAMILIES)


def family_for(name: str) -> Family:
    """The registered family called `name`, or an error listing the known ones."""
    if name not in _FAMILIES:
        raise SvdError(f"unknown model family {name!r} (known: {', '.join(_FAMILIES)})")
    return _FAMILIES[name]


def detect(header: CheckpointHeader) -> Family:
    """The family that reads the checkpoint `header` describes.

    When no family claims it, the default family (svd) gets it, so its format errors (which
    say what an SVD checkpoint should hold) are the ones a user sees.
    """
    if header.family is not None:
        return family_for(header.family)
    for family in _FAMILIES.values():
        if family.claims(header):
            return family
    return family_for(DEFAULT_FAMILY)


def pack_vae(source: str):
    """The VAE `svd pack --latents SOURCE` encodes with: a run dir's family builds the VAE it
    trains with; any other source (a checkpoint file, `tiny:SEED`) is the default family's."""
    from svdcli import runs

    path = Path(source)
    name = DEFAULT_FAMILY
    if path.is_dir() and runs.config_file(path).is_file():
        name = str(runs.read_config(path).get("family") or DEFAULT_FAMILY)
    return family_for(name).pack_vae(source)


def _register_builtins() -> None:
    from svdcli.families.svd import SVDFamily
    from svdcli.families.tune_a_video import TuneAVideoFamily
    from svdcli.families.vdm import VDMFamily
    from svdcli.families.video_ldm import VideoLDMFamily

    register(SVDFamily())
    register(TuneAVideoFamily())
    register(VDMFamily())
    register(VideoLDMFamily())


_register_builtins()
