"""Greedy generation with transformers, shared by the VLM captioner and the LLM summarizer.

Prompts are left-padded so every row's prompt ends where generation starts; decoding is greedy
(no sampling, one beam), so a row's output depends only on its own prompt, not on its batch.
The output of a row ends at its first stop token (the model's end-of-turn / end-of-text ids);
`Generated.tokens` counts the tokens before it.
"""
from __future__ import annotations

from typing import Callable

from svdcli.curate.scorers.captioning import Generated, tidy
from svdcli.errors import SvdError
from svdcli.weights import HfModel


def model_dtype(device: str):
    """bf16 weights on GPU, fp32 on CPU (bf16 matmuls are slower than fp32 on most CPUs)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load(what: str, model: HfModel, build: Callable):
    """Run `build()` (a from_pretrained call); any failure is one line naming the model."""
    try:
        return build()
    except SvdError:
        raise
    except Exception as exc:  # an unknown architecture, a damaged file, a missing tokenizer file
        detail = " ".join(str(exc).split())[:300]
        raise SvdError(f"cannot load {model.label} ({model.folder}) as a {what}: "
                       f"{type(exc).__name__}: {detail}") from exc


def stop_ids(net, tokenizer) -> list[int]:
    """The ids that end a generation: the model's generation config's eos ids, and the tokenizer's."""
    ids = net.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise SvdError("the model defines no end-of-text token (generation_config.eos_token_id), so generation "
                       "could not stop")
    return ids


def greedy(net, tokenizer, inputs: dict, max_new_tokens: int) -> list[Generated]:
    """Generate greedily from a left-padded batch; one `Generated` per row."""
    import torch
    from transformers import GenerationConfig

    stops = stop_ids(net, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                              pad_token_id=pad)
    inputs = {k: v.to(net.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    with torch.no_grad():
        out = net.generate(**inputs, generation_config=config)
    new = out[:, inputs["input_ids"].shape[1]:].tolist()  # (B, prompt + new) -> (B, new)
    results = []
    for ids in new:
        n = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        results.append(Generated(tidy(tokenizer.decode(ids[:n], skip_special_tokens=True)), n))
    return results


def chat_text(tokenizer_or_processor, content, what: str) -> str:
    """One user turn rendered with the model's chat template, ready for the assistant's reply."""
    try:
        return tokenizer_or_processor.apply_chat_template([{"role": "user", "content": content}],
                                                          add_generation_prompt=True, tokenize=False)
    except ValueError as exc:  # transformers: "Cannot use chat template functions because ... not set"
        raise SvdError(f"the {what} has no chat template ({' '.join(str(exc).split())[:120]}); use an "
                       "instruction-tuned (chat) model") from None
