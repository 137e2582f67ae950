"""The feature networks' weight files: where they come from, where they are looked for, how a
published file is converted once into a safetensors file that loads without running any code.

| network | published file | converted default |
|---|---|---|
| I3D Kinetics-400, StyleGAN-V's port of the TF-hub model | `i3d_torchscript.pt` (TorchScript) | `i3d_styleganv.safetensors` |
| I3D Kinetics-400, VideoGPT's port | `i3d_pretrained_400.pt` (state dict) | `i3d_videogpt.safetensors` |
| Inception-v3, the FID graph (2015-12-05) | `pt_inception-2015-12-05-6726825d.pth` (state dict) | `inception_fid.safetensors` |

Converted files live in `--weights-dir`, `SVD_WEIGHTS_DIR` or `~/.cache/svdcli/weights`
(svdcli.weights.weights_dir), or anywhere a flag names. A state dict (.pt/.pth) is read with
`torch.load(weights_only=True)`, which rebuilds tensors only. A TorchScript file is a program:
reading it runs its code, so `svd eval convert` does that only with `--trusted`, once, and every
later run reads the safetensors file. The converted file records the source's sha256, and every
result records both.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from svdcli.errors import MissingWeightsError, SvdError

FORMAT = "svdcli-eval-network"


@dataclass(frozen=True)
class Published:
    source: str             # the published file's name
    url: str
    sha256: str             # the published sha256 where one is documented, else what is known
    default: str            # converted file name in the weights folder


PUBLISHED = {
    "i3d-styleganv": Published(
        "i3d_torchscript.pt", "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
        "not published (StyleGAN-V documents only the URL); results record the sha256 of yours",
        "i3d_styleganv.safetensors"),
    "i3d-videogpt": Published(
        "i3d_pretrained_400.pt", "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
        "not published; results record the sha256 of yours", "i3d_videogpt.safetensors"),
    "inception-fid": Published(
        "pt_inception-2015-12-05-6726825d.pth",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        "starts with 6726825d (the torch.hub file-name convention; the full value is not published)",
        "inception_fid.safetensors"),
}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of the published file a converted file was made from (its metadata)."""
    return read_metadata(Path(path)).get("source_sha256")


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any parse failure: not a safetensors file
        raise SvdError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())[:120]}); "
                       "convert the published weights with `svd eval convert`") from None


def find_weights(kind: str, explicit: str | os.PathLike | None, weights_dir: str | os.PathLike | None = None) -> Path:
    """The converted file of network `kind` (a PUBLISHED key), or MissingWeightsError saying how to make it."""
    from svdcli.weights import weights_dir as default_dir

    pub = PUBLISHED[kind]
    path = Path(explicit).expanduser() if explicit else default_dir(weights_dir) / pub.default
    if path.is_file():
        return path
    flag = {"i3d-styleganv": "--i3d", "i3d-videogpt": "--i3d", "inception-fid": "--inception"}[kind]
    trusted = " --trusted" if pub.source.endswith("torchscript.pt") else ""
    raise MissingWeightsError(
        f"{kind} weights not found at {path}. Download {pub.source} from {pub.url} (sha256: {pub.sha256}), then "
        f"run `svd eval convert {pub.source}{trusted} --out {path}`, or pass {flag} PATH to a converted file")


def read_source(src: Path, trusted: bool) -> dict:
    """Tensors of a published file: a state dict (weights only) or, with `trusted`, a TorchScript module."""
    import torch

    if src.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(src))
    if _is_torchscript(src):
        if not trusted:
            raise SvdError(f"{src} is a TorchScript program: reading it runs its code. If you trust the file "
                           "(e.g. StyleGAN-V's i3d_torchscript.pt from its published URL), pass --trusted")
        module = torch.jit.load(str(src), map_location="cpu")
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        state = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle with code, truncated file, another format
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SvdError(f"{src}: not a state dict of plain tensors ({first})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise SvdError(f"{src}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def identify(state: dict) -> tuple[str, dict]:
    """(kind, state in our layout) of a published state dict; an unknown layout is an SvdError."""
    from svdcli.eval.i3d import is_videogpt_layout, rename_videogpt

    keys = set(state)
    if "conv3d_1a_7x7.conv3d.weight" in keys:
        return "i3d-styleganv", dict(state)
    if is_videogpt_layout(keys):
        return "i3d-videogpt", rename_videogpt(state)
    if "Conv2d_1a_3x3.conv.weight" in keys and "Mixed_7c.branch_pool.conv.weight" in keys:
        return "inception-fid", dict(state)
    raise SvdError(f"not an I3D or FID Inception state dict (first keys: {', '.join(sorted(keys)[:4])})")


def convert(src: Path, out: Path, trusted: bool = False) -> dict:
    """Read a published file, check it loads into our network, write `out` (.safetensors)."""
    from safetensors.torch import save_file

    if not src.is_file():
        raise SvdError(f"{src}: no such file")
    kind, state = identify(read_source(src, trusted))
    net = build(kind, state)   # refuses a state dict that does not fit the network
    layout = getattr(net, "net", net)   # FIDInception wraps torchvision's names in .net
    tensors = {k: v.detach().contiguous().float() if v.is_floating_point() else v.contiguous()
               for k, v in layout.state_dict().items()}
    meta = {"format": FORMAT, "network": kind, "source": src.name, "source_sha256": file_sha256(src),
            "width": repr(getattr(getattr(net, "cfg", None), "width", 1.0))}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out)
    return {**meta, "sha256": file_sha256(out), "tensors": len(tensors)}


def build(kind: str, state: dict):
    """The network of `kind` with `state` (our layout) loaded; its width is read from the tensors."""
    if kind.startswith("i3d"):
        from svdcli.eval.i3d import I3D, I3DConfig, load_state

        width = state["conv3d_1a_7x7.conv3d.weight"].shape[0] / 64
        eps = 1e-5 if kind == "i3d-videogpt" else 1e-3
        return load_state(I3D(I3DConfig(width=width, bn_eps=eps)), state, kind)
    from svdcli.eval.inception import load_inception_state

    return load_inception_state(state, kind)


def load_network(path: Path, expect: str):
    """A converted file as its network (eval mode, no grad); `expect` is 'i3d' or 'inception'."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    kind = meta.get("network", "")
    if meta.get("format") != FORMAT or not kind.startswith(expect):
        raise SvdError(f"{path} is not a converted {expect} file (network {kind or 'unknown'}); "
                       "make one with `svd eval convert`")
    return build(kind, load_file(str(path))), kind
