"""open_clip models for the clip and caption stages: loading, input geometry, CLIP embeddings.

Frames are decoded with the short side at the model's input size (area resampling) and
centre-cropped, the same geometry as open_clip's default transform ('shortest' resize + crop).
Embeddings are L2-normalised float32 on the CPU; bf16 autocast on GPU, plain fp32 on CPU.
"""
from __future__ import annotations

import numpy as np

from svdcli.errors import SvdError
from svdcli.weights import OpenClipWeights, register_model_config


def load_open_clip(weights: OpenClipWeights, model: str, device: str):
    """Create an open_clip model from a resolved checkpoint, in eval mode on `device`."""
    import open_clip

    name = register_model_config(model)
    try:
        net = open_clip.create_model(name, pretrained=weights.checkpoint, device=device,
                                     force_quick_gelu=weights.quick_gelu,
                                     force_preprocess_cfg=weights.preprocess or None)
    except SvdError:
        raise
    except Exception as exc:  # another architecture fails the strict load; a damaged file fails to unpickle
        detail = " ".join(str(exc).split())[:300]  # one line: a strict load lists keys over many
        raise SvdError(f"cannot load {weights.checkpoint} into open_clip {name}: {type(exc).__name__}: "
                       f"{detail}") from exc
    return net.eval()


def clip_read_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) with the SHORT side equal to `side` (even sides), for decode-time resizing."""
    scale = side / min(width, height)
    return max(side, round(width * scale / 2) * 2), max(side, round(height * scale / 2) * 2)


def to_model_input(frames: np.ndarray, side: int, mean, std, device: str):
    """uint8 (N, H, W, 3) with short side `side` -> normalised float (N, 3, side, side), centre crop."""
    import torch

    n, h, w = frames.shape[:3]
    top, left = (h - side) // 2, (w - side) // 2
    crop = frames[:, top:top + side, left:left + side]
    x = torch.from_numpy(np.ascontiguousarray(crop)).to(device).permute(0, 3, 1, 2).float() / 255  # (N, 3, S, S)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def autocast(device: str):
    """bf16 autocast on GPU, nothing on CPU (bf16 matmuls are slower than fp32 on most CPUs)."""
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()


class ClipEmbedder:
    """An open_clip model's image and text towers: batched, L2-normalised float32 embeddings."""

    def __init__(self, net, tokenizer, device: str = "cpu", batch_size: int = 16):
        self.net, self.tokenizer = net, tokenizer
        self.device, self.batch_size = device, batch_size
        cfg = net.visual.preprocess_cfg
        self.side = int(np.atleast_1d(cfg["size"])[0])
        self.mean, self.std = cfg["mean"], cfg["std"]

    @classmethod
    def load(cls, weights: OpenClipWeights, model: str, device: str = "cpu", batch_size: int = 16) -> "ClipEmbedder":
        import open_clip

        net = load_open_clip(weights, model, device)
        return cls(net, open_clip.get_tokenizer(register_model_config(model)), device, batch_size)

    def embed_images(self, frames: np.ndarray):
        """uint8 (N, H, W, 3) frames (short side = self.side) -> (N, D) unit vectors on CPU."""
        import torch

        out = []
        with torch.no_grad(), autocast(self.device):
            for i in range(0, len(frames), self.batch_size):
                x = to_model_input(frames[i:i + self.batch_size], self.side, self.mean, self.std, self.device)
                out.append(self.net.encode_image(x, normalize=True).float().cpu())
        return torch.cat(out)

    def embed_texts(self, texts: list[str]):
        """Captions -> (N, D) unit vectors on CPU."""
        import torch

        out = []
        with torch.no_grad(), autocast(self.device):
            for i in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(texts[i:i + self.batch_size]).to(self.device)
                out.append(self.net.encode_text(tokens, normalize=True).float().cpu())
        return torch.cat(out)


def clip_scores(image_emb, text_emb):
    """Mean over frames of cos(image, text): (C, F, D) and (C, D) unit vectors -> (C,)."""
    return (image_emb * text_emb[:, None, :]).sum(-1).mean(-1)
