"""vLLM as the engine of the VLM captioner and the LLM summarizer, and which engine a run gets.

`--engine auto` picks vLLM when the package is installed and a CUDA GPU is visible (and the
device is not cpu), else transformers; `--engine vllm` without either is one clear error.
The prompts are the transformers path's (the same chat template rendering, the same frames,
the frame rate passed to the processor), decoding is greedy (temperature 0), so both engines
caption alike up to bf16 rounding (a gpu-marked test compares them); vLLM batches the requests
of a task itself (continuous batching).
"""
from __future__ import annotations

import importlib.util

import numpy as np

from svdcli.curate.scorers.captioning import Generated, tidy
from svdcli.errors import SvdError
from svdcli.weights import HfModel

ENGINES = ("auto", "transformers", "vllm")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_engine(engine: str, device: str) -> str:
    """'transformers' or 'vllm' for `--engine` on `--device`; a vLLM request that cannot run is an error."""
    if engine not in ENGINES:
        raise SvdError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    on_gpu = device != "cpu" and cuda_visible()
    first_gpu = device in ("auto", "cuda", "cuda:0")  # vLLM runs on the GPUs CUDA_VISIBLE_DEVICES shows, from 0
    if engine == "auto":
        return "vllm" if on_gpu and first_gpu and vllm_installed() else "transformers"
    if engine == "vllm":
        if not vllm_installed():
            raise SvdError("--engine vllm needs the vllm package, which is not installed (pip install vllm, on "
                           "Linux with a CUDA GPU); or use --engine transformers")
        if not on_gpu:
            where = "--device cpu was asked for" if device == "cpu" else "no CUDA GPU is visible"
            raise SvdError(f"--engine vllm needs a CUDA GPU and {where}; use --engine transformers")
        if not first_gpu:
            raise SvdError(f"--engine vllm cannot be placed with --device {device}: it runs on the first GPU "
                           f"CUDA_VISIBLE_DEVICES shows; set CUDA_VISIBLE_DEVICES={device.split(':')[-1]} and "
                           "--device cuda")
    return engine


def _llm(model: HfModel, gpu_share: float, **kwargs):
    from vllm import LLM

    try:  # gpu_share: the part of the GPU's memory this engine may take (two engines share one GPU)
        return LLM(model=model.folder, dtype="bfloat16", seed=0, gpu_memory_utilization=gpu_share, **kwargs)
    except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; one line names the model
        detail = " ".join(str(exc).split())[:300]
        raise SvdError(f"vLLM cannot load {model.label} ({model.folder}): {type(exc).__name__}: {detail}") from exc


def _generated(output, stops: set[int]) -> Generated:
    ids = list(output.outputs[0].token_ids)
    while ids and ids[-1] in stops:  # vLLM keeps the stop token in token_ids, not in text
        ids.pop()
    return Generated(tidy(output.outputs[0].text), len(ids))


class VllmVlm:
    """`VlmCaptioner`'s interface on vLLM: the same rendered prompts and frames."""

    def __init__(self, model: HfModel, prompt: str, *, frames_as: str = "auto", max_new_tokens: int = 128,
                 frames: int = 8, gpu_share: float = 0.9):
        from vllm import SamplingParams

        from svdcli.curate.scorers.captioning.generation import chat_text
        from svdcli.curate.scorers.captioning.prompts import video_prompt
        from svdcli.curate.scorers.captioning.vlm import load_processor, takes_video

        self.model, self.template = model, prompt
        self.processor = load_processor(model)
        self.as_video = takes_video(self.processor, frames_as, model.label)
        self._chat, self._prompt = chat_text, video_prompt
        limit = {"video": 1} if self.as_video else {"image": frames}
        self.llm = _llm(model, gpu_share, limit_mm_per_prompt=limit)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.stops = set(self.llm.get_tokenizer().all_special_ids)

    def render(self, frames: int, seconds: float) -> str:
        media = [{"type": "video"}] if self.as_video else [{"type": "image"}] * frames
        content = [*media, {"type": "text", "text": self._prompt(self.template, frames, seconds)}]
        return self._chat(self.processor, content, f"processor of {self.model.label}")

    def caption(self, clips: list[np.ndarray], seconds: list[float]) -> list[Generated]:
        requests = []
        for frames, s in zip(clips, seconds):
            request = {"prompt": self.render(len(frames), s)}
            if self.as_video:
                request["multi_modal_data"] = {"video": frames}
                request["mm_processor_kwargs"] = {"fps": len(frames) / max(s, 1e-3), "do_sample_frames": False}
            else:
                request["multi_modal_data"] = {"image": list(frames)}
            requests.append(request)
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        return [_generated(o, self.stops) for o in outputs]


class VllmSummarizer:
    """`Summarizer`'s interface on vLLM: the same rendered prompts."""

    def __init__(self, model: HfModel, prompt: str, *, max_new_tokens: int = 128, gpu_share: float = 0.9):
        from vllm import SamplingParams

        from svdcli.curate.scorers.captioning.generation import chat_text
        from svdcli.curate.scorers.captioning.prompts import summary_prompt

        self.model, self.template = model, prompt
        self._chat, self._prompt = chat_text, summary_prompt
        self.llm = _llm(model, gpu_share)
        self.tokenizer = self.llm.get_tokenizer()
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        self.stops = set(self.tokenizer.all_special_ids)

    def render(self, coca: str, video: str) -> str:
        prompt = self._prompt(self.template, coca, video)
        if self.chat:
            return self._chat(self.tokenizer, prompt, f"tokenizer of {self.model.label}")
        return prompt

    def summarize(self, pairs: list[tuple[str, str]]) -> list[Generated]:
        # token ids as the transformers path makes them: a chat template writes its own begin token
        ids = [self.tokenizer(self.render(c, v), add_special_tokens=not self.chat)["input_ids"] for c, v in pairs]
        outputs = self.llm.generate([{"prompt_token_ids": t} for t in ids], self.params, use_tqdm=False)
        return [_generated(o, self.stops) for o in outputs]
