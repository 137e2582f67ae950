"""A transformers vision-language model that captions a clip from N of its frames.

Any model `AutoModelForImageTextToText` (or `AutoModelForVision2Seq`) loads with an
`AutoProcessor` that has a chat template: Qwen2.5-VL by default, LLaVA-OneVision, SmolVLM,
... The frames go in as one video when the processor has a video processor (`frames_as:
auto|video`), else as N images in one user turn (`images`). The frames were sampled by
timestamp by the stage; the processor does not sample again (`do_sample_frames=False`), and a
Qwen-style video gets its true frame rate (N / clip seconds) for its temporal positions.
"""
from __future__ import annotations

import numpy as np

from svdcli.curate.scorers.captioning import Generated
from svdcli.curate.scorers.captioning.generation import chat_text, greedy, load, model_dtype
from svdcli.curate.scorers.captioning.prompts import video_prompt
from svdcli.errors import SvdError
from svdcli.weights import HfModel

FRAMES_AS = ("auto", "video", "images")


def load_processor(model: HfModel):
    from transformers import AutoProcessor

    processor = load("vision-language processor", model, lambda: AutoProcessor.from_pretrained(model.folder))
    if not hasattr(processor, "tokenizer"):
        raise SvdError(f"cannot load {model.label} ({model.folder}) as a vision-language model: its processor is a "
                       f"{type(processor).__name__}, which takes no images")
    processor.tokenizer.padding_side = "left"  # prompts end where generation starts
    return processor


def takes_video(processor, frames_as: str, label: str) -> bool:
    """Whether frames go in as one video (else as images), checked against what the processor takes."""
    has_video = getattr(processor, "video_processor", None) is not None
    if frames_as == "video" and not has_video:
        raise SvdError(f"--frames-as video: {label}'s processor takes no video; use --frames-as images")
    return has_video if frames_as == "auto" else frames_as == "video"


class VlmCaptioner:
    """Captions clips (each a uint8 (F, H, W, 3) array) with greedy decoding, `batch_size` clips at a time."""

    def __init__(self, model: HfModel, prompt: str, *, frames_as: str = "auto", max_new_tokens: int = 128,
                 device: str = "cpu", batch_size: int = 8):
        self.model, self.template, self.max_new_tokens = model, prompt, max_new_tokens
        self.device, self.batch_size = device, batch_size
        self.processor = load_processor(model)
        self.as_video = takes_video(self.processor, frames_as, model.label)
        self.net = load("vision-language model", model, lambda: _load_model(model, device))

    def render(self, frames: int, seconds: float) -> str:
        """The full text the model reads for one clip: the prompt inside the chat template."""
        media = [{"type": "video"}] if self.as_video else [{"type": "image"}] * frames
        content = [*media, {"type": "text", "text": video_prompt(self.template, frames, seconds)}]
        return chat_text(self.processor, content, f"processor of {self.model.label}")

    def caption(self, clips: list[np.ndarray], seconds: list[float]) -> list[Generated]:
        """One caption per clip; `seconds` is each clip's length (for the prompt and the frame rate).

        A batch holds only clips whose inputs are equally long (the same prompt text and frame
        shape), so nothing is padded: transformers 4.55's Qwen2.5-VL places the generated tokens
        of a left-padded row at the wrong rotary positions (the padding is subtracted twice), and
        no model's caption should depend on its batch's other clips. The clips of one video
        usually share both, so they still batch.
        """
        texts = [self.render(len(f), s) for f, s in zip(clips, seconds)]
        groups: dict[tuple, list[int]] = {}
        for i, (text, frames) in enumerate(zip(texts, clips)):
            groups.setdefault((text, frames.shape), []).append(i)
        out: list[Generated | None] = [None] * len(clips)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                generated = self._batch([clips[i] for i in batch], [seconds[i] for i in batch],
                                        [texts[i] for i in batch])
                for i, g in zip(batch, generated):
                    out[i] = g
        return out

    def _batch(self, clips: list[np.ndarray], seconds: list[float], texts: list[str]) -> list[Generated]:
        if self.as_video:
            rates = [len(f) / max(s, 1e-3) for f, s in zip(clips, seconds)]
            inputs = self.processor(text=texts, videos=list(clips), fps=rates, do_sample_frames=False,
                                    padding=True, add_special_tokens=False, return_tensors="pt")
        else:
            inputs = self.processor(text=texts, images=[list(f) for f in clips], padding=True,
                                    add_special_tokens=False, return_tensors="pt")
        inputs = dict(inputs)
        for key, value in inputs.items():  # pixel values in the model's dtype (bf16 on GPU)
            if hasattr(value, "is_floating_point") and value.is_floating_point():
                inputs[key] = value.to(self.net.dtype)
        return greedy(self.net, self.processor.tokenizer, inputs, self.max_new_tokens)


def _load_model(model: HfModel, device: str):
    from transformers import AutoModelForImageTextToText, AutoModelForVision2Seq

    dtype = model_dtype(device)
    try:
        net = AutoModelForImageTextToText.from_pretrained(model.folder, torch_dtype=dtype)
    except ValueError as first:  # not registered as image-text-to-text: older VLM classes
        try:
            net = AutoModelForVision2Seq.from_pretrained(model.folder, torch_dtype=dtype)
        except ValueError:
            raise first from None
    return net.to(device).eval()
