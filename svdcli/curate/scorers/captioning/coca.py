"""CoCa through open_clip: one caption per frame (the paper's image captioner, on the middle frame).

Decoding is open_clip's `generate`: beam search (deterministic), or top-k / top-p sampling seeded
per batch (so sampled captions depend on how clips were batched; greedy decoding is top_k with
k = 1). open_clip 3.3's beam search needs transformers < 4.56, which the project pins.
"""
from __future__ import annotations

import numpy as np

from svdcli.curate.scorers.captioning import Generated
from svdcli.errors import SvdError
from svdcli.weights import OpenClipWeights

GENERATION_TYPES = ("beam_search", "top_k", "top_p")
SOT, EOT = "<start_of_text>", "<end_of_text>"


def clean_caption(text: str) -> str:
    """Decoded tokens -> caption: drop the start token, everything from the end token, spaces."""
    text = text.replace(SOT, "").split(EOT)[0]
    text = " ".join(text.split())
    return text.removesuffix(" .").strip()


# open_clip `generate` settings a captioner reads from its `decoding` object (the caption stage's config)
DECODING = ("generation", "seq_len", "min_seq_len", "num_beams", "num_beam_groups", "top_k", "top_p", "temperature",
            "repetition_penalty", "seed")


class CocaCaptioner:
    """A CoCa model that captions batches of frames; `decoding` has the DECODING attributes."""

    def __init__(self, weights: OpenClipWeights, model: str, decoding, device: str = "cpu", batch_size: int = 8):
        from svdcli.curate.scorers.open_clip_models import load_open_clip

        self.decoding, self.device, self.batch_size = decoding, device, batch_size
        self.net = load_open_clip(weights, model, device)
        if not hasattr(self.net, "generate"):
            raise SvdError(f"{weights.label} is not a captioning (CoCa) model; use e.g. coca_ViT-L-14")
        cfg = self.net.visual.preprocess_cfg
        self.side = int(np.atleast_1d(cfg["size"])[0])
        self.mean, self.std = cfg["mean"], cfg["std"]

    def caption(self, frames: np.ndarray) -> list[Generated]:
        """uint8 (N, H, W, 3) frames with short side `self.side` -> one caption each."""
        import open_clip
        import torch

        from svdcli.curate.scorers.open_clip_models import autocast, to_model_input

        d = self.decoding
        out: list[Generated] = []
        for i in range(0, len(frames), self.batch_size):
            x = to_model_input(frames[i:i + self.batch_size], self.side, self.mean, self.std, self.device)
            torch.manual_seed(d.seed)  # only the sampling decoders draw random numbers
            with torch.no_grad(), autocast(self.device):
                tokens = self.net.generate(x, generation_type=d.generation, seq_len=d.seq_len,
                                           min_seq_len=d.min_seq_len, num_beams=d.num_beams,
                                           num_beam_groups=d.num_beam_groups, top_k=d.top_k, top_p=d.top_p,
                                           temperature=d.temperature, repetition_penalty=d.repetition_penalty)
            out.extend(Generated(clean_caption(open_clip.decode(t)), output_tokens(t.tolist())) for t in tokens)
        return out


def output_tokens(ids: list[int]) -> int:
    """Tokens CoCa generated: after the start token, before the end token (and its padding)."""
    from open_clip.tokenizer import _tokenizer

    sot, eot = _tokenizer.sot_token_id, _tokenizer.eot_token_id
    body = ids[1:] if ids and ids[0] == sot else ids
    return body.index(eot) if eot in body else sum(1 for t in body if t != 0)
