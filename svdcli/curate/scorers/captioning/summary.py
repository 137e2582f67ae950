"""The LLM summary of a clip's two captions (the paper's third caption): any transformers causal LM.

The prompt (a template with `{coca}` and `{video}`, see prompts.py) goes in as one user turn of
the model's chat template when it has one, else as plain text; decoding is greedy and batched
with left padding, so a clip's summary does not depend on its batch.
"""
from __future__ import annotations

from svdcli.curate.scorers.captioning import Generated
from svdcli.curate.scorers.captioning.generation import chat_text, greedy, load, model_dtype
from svdcli.curate.scorers.captioning.prompts import summary_prompt
from svdcli.weights import HfModel


class Summarizer:
    """Writes one caption from (CoCa caption, video caption) pairs, `batch_size` at a time."""

    def __init__(self, model: HfModel, prompt: str, *, max_new_tokens: int = 128, device: str = "cpu",
                 batch_size: int = 8):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model, self.template, self.max_new_tokens, self.batch_size = model, prompt, max_new_tokens, batch_size
        self.tokenizer = load("tokenizer", model, lambda: AutoTokenizer.from_pretrained(model.folder))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:  # many causal LMs ship without one; padding is masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.net = load("causal language model", model, lambda: AutoModelForCausalLM.from_pretrained(
            model.folder, torch_dtype=model_dtype(device)).to(device).eval())

    def render(self, coca: str, video: str) -> str:
        """The full text the model reads: the filled prompt, inside the chat template when there is one."""
        prompt = summary_prompt(self.template, coca, video)
        if self.chat:
            return chat_text(self.tokenizer, prompt, f"tokenizer of {self.model.label}")
        return prompt

    def summarize(self, pairs: list[tuple[str, str]]) -> list[Generated]:
        """(coca, video) caption pairs -> one summary each."""
        out: list[Generated] = []
        for i in range(0, len(pairs), self.batch_size):
            texts = [self.render(c, v) for c, v in pairs[i:i + self.batch_size]]
            # a chat template writes its own begin token; plain text gets the tokenizer's
            inputs = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=not self.chat)
            out.extend(greedy(self.net, self.tokenizer, dict(inputs), self.max_new_tokens))
        return out
