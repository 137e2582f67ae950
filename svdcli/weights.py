"""Where model weights are found on disk (text, CLIP, caption stages; training encoders), and what to say when they are missing.

Nothing here downloads silently on an offline machine: every lookup checks the local places
first (an explicit path, a folder given by a flag or an environment variable, the Hugging Face
cache) and, when the file is absent and the hub cannot be reached, raises MissingWeightsError
naming the file, where it comes from and where to put it.

| weights | default place | override |
|---|---|---|
| CRAFT (`craft_mlt_25k.pth`, easyocr) | `~/.EasyOCR/model` | `--model-dir`, `SVD_EASYOCR_DIR`, `EASYOCR_MODULE_PATH/model` |
| DBNet (PP-OCRv4 det, onnx) | inside the rapidocr-onnxruntime wheel | - |
| open_clip models (CLIP, CoCa) | Hugging Face cache (`HF_HOME`) | `--pretrained /path/to/file` |
| transformers models (caption VLM, summary LLM) | Hugging Face cache (`HF_HOME`) | a model folder for `--pretrained` / `--summarize` |
| LAION aesthetic heads | `~/.cache/svdcli/weights` | `--aesthetic PATH`, `--weights-dir`, `SVD_WEIGHTS_DIR` |
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.optional import imported

CRAFT_FILE = "craft_mlt_25k.pth"
CRAFT_URL = "https://github.com/JaidedAI/EasyOCR/releases/download/pre-v1.1.6/craft_mlt_25k.zip"

# LAION heads on L2-normalised CLIP image embeddings: name -> (file, url, embedding dim)
AESTHETIC_HEADS = {
    "laion-mlp": ("sac+logos+ava1-l14-linearMSE.pth",
                  "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                  "sac%2Blogos%2Bava1-l14-linearMSE.pth", 768),
    "laion-linear-l14": ("sa_0_4_vit_l_14_linear.pth",
                         "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth", 768),
    "laion-linear-b32": ("sa_0_4_vit_b_32_linear.pth",
                         "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_b_32_linear.pth", 512),
}


# --- devices ----------------------------------------------------------------------------------
def pick_device(device: str = "auto") -> str:
    """'auto' means cuda when a GPU is visible, else cpu; anything else is used as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        index = torch.device(device).index
    except RuntimeError:
        raise SvdError(f"--device {device!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvdError(f"--device {device} asked for, but no CUDA GPU is visible (use --device cpu)")
    if device.startswith("cuda") and index is not None and index >= torch.cuda.device_count():
        raise SvdError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def check_device(device: str) -> None:
    """Refuse a bad --device in the parent, before any worker starts (torch is imported only to check one)."""
    if device not in ("auto", "cpu"):
        pick_device(device)


# --- text detectors ---------------------------------------------------------------------------
def craft_dirs(model_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for CRAFT weights, in order."""
    dirs = [Path(model_dir).expanduser()] if model_dir else []
    if os.environ.get("SVD_EASYOCR_DIR"):
        dirs.append(Path(os.environ["SVD_EASYOCR_DIR"]).expanduser())
    if os.environ.get("EASYOCR_MODULE_PATH"):
        dirs.append(Path(os.environ["EASYOCR_MODULE_PATH"]).expanduser() / "model")
    dirs.append(Path.home() / ".EasyOCR" / "model")
    return dirs


def find_craft(model_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of `craft_mlt_25k.pth` when present in one of `craft_dirs`, else None."""
    for folder in craft_dirs(model_dir):
        if (folder / CRAFT_FILE).is_file():
            return folder / CRAFT_FILE
    return None


def craft_weights(model_dir: str | os.PathLike | None = None) -> Path:
    """Path of the CRAFT weights, or MissingWeightsError saying how to get them."""
    path = find_craft(model_dir)
    if path is None:
        searched = ", ".join(str(d) for d in craft_dirs(model_dir))
        raise MissingWeightsError(
            f"CRAFT text detector weights `{CRAFT_FILE}` not found (searched: {searched}). "
            f"Download {CRAFT_URL}, unzip it and put `{CRAFT_FILE}` in ~/.EasyOCR/model, or in a "
            f"folder given by --model-dir or SVD_EASYOCR_DIR. Or use --detector dbnet, which "
            f"ships inside the rapidocr-onnxruntime package.")
    return path


def dbnet_weights() -> Path:
    """The DBNet (PP-OCRv4 detection) onnx model shipped inside rapidocr-onnxruntime."""
    rapidocr_onnxruntime = imported("rapidocr_onnxruntime", "the dbnet text detector")
    path = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing from the rapidocr-onnxruntime install; reinstall it")
    return path


# --- open_clip ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenClipWeights:
    """A resolved open_clip checkpoint and the model settings its tag implies."""

    checkpoint: str
    label: str  # short name recorded in the manifest, e.g. "ViT-L-14:openai"
    quick_gelu: bool = False
    preprocess: dict = field(default_factory=dict)


MODEL_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # what open_clip needs to register a config


def register_model_config(model: str) -> str:
    """Accept an open_clip model name or a path to a model-config JSON (registered under its stem).

    The file is checked first: open_clip rereads every registered file on each registration, so
    one broken file would break every later one.
    """
    if model.endswith(".json") and Path(model).is_file():
        import json

        import open_clip

        try:
            cfg = json.loads(Path(model).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SvdError(f"--model {model} is not valid JSON: {exc}") from None
        missing = [k for k in MODEL_CONFIG_KEYS if not isinstance(cfg, dict) or k not in cfg]
        if missing:
            raise SvdError(f"--model {model} is not an open_clip model config: no {', '.join(missing)}")
        open_clip.add_model_config(Path(model))
        return Path(model).stem
    return model


def open_clip_weights(model: str, pretrained: str) -> OpenClipWeights:
    """Resolve `pretrained` (a local file or an open_clip tag) to a local checkpoint file."""
    import open_clip

    name = register_model_config(model)
    if open_clip.get_model_config(name) is None:
        raise SvdError(f"unknown open_clip model {model!r}; known: {', '.join(open_clip.list_models()[:12])}, ... "
                       f"(or pass a model-config .json file)")
    if Path(pretrained).expanduser().is_file():
        path = Path(pretrained).expanduser()
        check_checkpoint(path)
        return OpenClipWeights(str(path), f"{name}:{path.name}")
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise SvdError(f"--pretrained {pretrained!r} is neither a file nor a known tag for {name}; "
                       f"tags: {', '.join(tags) or 'none (pass a checkpoint file)'}")
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    checkpoint = _hub_checkpoint(cfg, name, pretrained) if cfg.get("hf_hub") else _url_checkpoint(cfg, name, pretrained)
    return OpenClipWeights(checkpoint, f"{name}:{pretrained}", bool(cfg.get("quick_gelu")), preprocess)


TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # how a pre-zip torch.save file starts


def check_checkpoint(path: Path) -> None:
    """Refuse, before any work, a --pretrained file that is empty, truncated or no checkpoint at all.

    Cheap: a .safetensors header, the directory at the end of a torch zip file, or the legacy
    torch prefix; a file that passes can still fail to load, and then says so by name.
    """
    import zipfile

    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt"):
                return
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
            return
        with open(path, "rb") as f:
            if f.read(len(TORCH_LEGACY_MAGIC)) == TORCH_LEGACY_MAGIC:
                return
        reason = "neither a torch checkpoint (.pt, .bin) nor .safetensors, or it is truncated"
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the same to the user
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    raise SvdError(f"--pretrained {path} cannot be read as open_clip weights: {reason}")


def _hub_checkpoint(cfg: dict, name: str, tag: str) -> str:
    from huggingface_hub import hf_hub_download

    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    # 'org/repo/' means the default file name; safetensors alternatives are preferred, as open_clip does
    repo, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    candidates = [*_get_safe_alternatives(filename), filename]
    for local_only in (True, False):
        if not local_only and not hub_reachable():
            break
        for fname in candidates:
            try:
                return hf_hub_download(repo, fname, local_files_only=local_only)
            except Exception:  # noqa: BLE001 - absent from cache / hub: try the next name
                continue
    raise MissingWeightsError(
        f"open_clip weights for {name} '{tag}' are not on this machine and the Hugging Face hub "
        f"cannot be reached. Fetch {' or '.join(f'`{c}`' for c in candidates)} from the hub repo "
        f"`{repo}` (e.g. `huggingface-cli download {repo} {candidates[-1]}`, which fills the cache in "
        f"HF_HOME), or download it anywhere and pass its path: --pretrained /path/to/{candidates[-1]}")


def _url_checkpoint(cfg: dict, name: str, tag: str) -> str:
    url = cfg.get("url", "")
    target = Path.home() / ".cache" / "clip" / os.path.basename(url)
    if target.is_file():
        return str(target)
    if url and hub_reachable(host=url.split("/")[2]):
        from open_clip.pretrained import download_pretrained_from_url

        return download_pretrained_from_url(url)
    raise MissingWeightsError(f"open_clip weights for {name} '{tag}' are not on this machine: download "
                              f"{url} to {target} or pass its path with --pretrained")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """False when offline mode is set or the host cannot be reached (avoids minutes of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct connection says nothing behind a proxy: let the download try
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# --- transformers models (caption VLM, summary LLM) ---------------------------------------------------
@dataclass(frozen=True)
class HfModel:
    """A transformers model folder on this machine and the name the manifest records for it."""

    folder: str
    label: str  # the hub id (e.g. 'Qwen/Qwen2.5-VL-7B-Instruct') or the folder's name


HF_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]  # what a download fetches
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def hf_model(spec: str, flag: str) -> HfModel:
    """Resolve a model folder or a Hugging Face hub id (`org/name`) to a local folder.

    A folder must hold `config.json`. A hub id is looked up in the Hugging Face cache; when it is
    absent there it is downloaded into the cache (safetensors weights, configs, tokenizer files) if
    the hub can be reached, else MissingWeightsError says what to fetch. `flag` names the option
    in messages (e.g. '--pretrained').
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SvdError(f"{flag} {spec}: the folder has no config.json, so it is no transformers model folder")
        return HfModel(str(path.resolve()), path.resolve().name)
    if not _HUB_ID.match(spec):
        raise SvdError(f"{flag} {spec!r} is neither a model folder nor a Hugging Face model id (org/name)")
    folder = _cached_snapshot(spec)
    if folder is None and hub_reachable():
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(spec, allow_patterns=HF_FILES)
        except Exception as exc:  # noqa: BLE001 - an unknown or private repo, a broken connection
            raise MissingWeightsError(f"{flag} {spec}: download from the Hugging Face hub failed "
                                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if folder is None:
        raise MissingWeightsError(
            f"{flag} {spec}: the model is not in the Hugging Face cache ({hf_cache_dir()}) and the hub cannot be "
            f"reached. Fetch it with `huggingface-cli download {spec}` (which fills that cache), or download it "
            f"to a folder and pass {flag} /path/to/folder")
    return HfModel(folder, spec)


def _cached_snapshot(repo: str) -> str | None:
    """The cached snapshot folder of `repo` when it holds a config and safetensors weights."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or a broken cache entry): not here
        return None
    return str(folder) if (folder / "config.json").is_file() and _all_weights(folder) else None


def _all_weights(folder: Path) -> bool:
    """Safetensors weights are there, every shard the index names (a download cut short lacks some)."""
    import json

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError):
            return False
        return all((folder / shard).is_file() for shard in shards)
    return any(folder.glob("*.safetensors"))


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


# --- aesthetic heads ----------------------------------------------------------------------------
def weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Folder for small heads: --weights-dir, SVD_WEIGHTS_DIR or ~/.cache/svdcli/weights."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("SVD_WEIGHTS_DIR", Path.home() / ".cache" / "svdcli" / "weights")).expanduser()


def aesthetic_weights(spec: str, folder: str | os.PathLike | None = None) -> Path:
    """Resolve an aesthetic head: a file path, 'hf-hub:REPO/FILE', or a name in AESTHETIC_HEADS."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        repo, filename = os.path.split(spec[len("hf-hub:"):])
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=not hub_reachable()))
        except Exception as exc:  # noqa: BLE001 - any hub failure means: not available here
            raise MissingWeightsError(f"aesthetic head {filename} from hub repo {repo} is not in the "
                                      f"Hugging Face cache and the hub cannot be reached ({type(exc).__name__}); "
                                      f"download it and pass --aesthetic /path/to/{filename}") from exc
    if spec not in AESTHETIC_HEADS:
        raise SvdError(f"--aesthetic {spec!r} is not a file, an hf-hub: name or one of "
                       f"{', '.join(AESTHETIC_HEADS)} (or 'none' to skip the aesthetic score)")
    filename, url, _ = AESTHETIC_HEADS[spec]
    target = weights_dir(folder) / filename
    if not target.is_file():
        raise MissingWeightsError(f"aesthetic head `{filename}` not found in {target.parent}. Download {url} "
                                  f"into that folder (set it with --weights-dir or SVD_WEIGHTS_DIR), pass "
                                  f"--aesthetic /path/to/{filename}, or --aesthetic none to skip the score.")
    return target
