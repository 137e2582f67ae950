"""Caption engines: pure scorers from frames (uint8 arrays) or captions to text, no paths.

The SVD paper's LVD corpus carries three synthetic captions per clip (Sec. 3, App. C): CoCa on
the middle frame, a video captioner over the clip, and an LLM summary of the two. Here:

- `coca.py`      CocaCaptioner: open_clip CoCa on one frame per clip (the paper's image captioner);
- `vlm.py`       VlmCaptioner: any transformers vision-language model over N frames of a clip
                 (Qwen2.5-VL by default), batched greedy generation (the video captioner);
- `summary.py`   Summarizer: any transformers causal LM, given both captions (the LLM summary);
- `vllm_engine.py` the same VLM and LLM run by vLLM, and which engine a run gets;
- `prompts.py`   the default prompts and how templates are checked and filled.

Every engine returns `Generated` (text and the number of output tokens), so a stage can report
tokens per second whichever engine ran. Decoding is greedy for the VLM and the LLM: the same
frames give the same caption however clips were batched.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generated:
    """One generated text and how many tokens the model produced for it (end token excluded)."""

    text: str
    tokens: int


def tidy(text: str) -> str:
    """Generated text as a caption: one line, single spaces, no surrounding space."""
    return " ".join(text.split())
