"""Open a checkpoint for sampling: a run folder means its newest export, the header is read once,
the family is the one the checkpoint names or claims it (or the one asked for), and that
family builds the model."""
from __future__ import annotations

from pathlib import Path

from svdcli.errors import MissingWeightsError

NOT_FOUND_HINT = ("Official weights: svd.safetensors from https://huggingface.co/stabilityai/stable-video-diffusion-img2vid "
                  "(svd_xt.safetensors from ...-img2vid-xt); or `make demo` trains a small checkpoint to try.")


def load_model(path: str | Path, family: str | None = None):
    """The svdcli.families.base.LoadedModel of `path`, weights on the CPU."""
    from svdcli import runs
    from svdcli.families import detect, family_for, read_header

    path = Path(path).expanduser()
    if not path.exists():
        raise MissingWeightsError(f"checkpoint not found: {path}. {NOT_FOUND_HINT}")
    path = runs.resolve_checkpoint(path)
    header = read_header(path)
    return (family_for(family) if family else detect(header)).load(header)
