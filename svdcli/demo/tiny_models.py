"""Stand-in curation models for the demo: tiny open_clip CLIP and CoCa configs with seeded random
weights, and a random LAION-shaped aesthetic head, written as ordinary files.

Real weights cannot be assumed on a fresh offline machine. These files go through exactly the
code paths real ones do (`--model CONFIG.json --pretrained FILE`), but their scores and captions
are meaningless; the demo says so. With real weights, use the defaults of `svd curate clip` and
`svd curate caption` (ViT-L-14/openai, coca_ViT-L-14) instead.
"""
from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP = {"embed_dim": 768,  # the LAION ViT-L/14 aesthetic MLP takes 768-d embeddings
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
TINY_COCA = {
    "embed_dim": 64, "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32,
                   "attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 8,
                   "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                       "attn_pooler_heads": 2},
}


def seeded_coca(name: str):
    """An open_clip CoCa of a registered config with every weight drawn from the torch seed: open_clip
    leaves the decoder's text_projection uninitialised (torch.empty: garbage, at times NaN) and
    zero-inits others (all logits would tie)."""
    import open_clip
    import torch

    coca = open_clip.create_model(name)
    with torch.no_grad():
        for param_name, p in coca.named_parameters():
            if param_name == "text_decoder.text_projection" or not p.any():
                p.normal_(std=0.02)
    return coca


def write_tiny_coca(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """The tiny CoCa config and seeded weights as files: {'model': config .json, 'pretrained': .pt}."""
    import logging

    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config, weights = folder / "tiny-coca.json", folder / "tiny-coca.pt"
    config.write_text(json.dumps(TINY_COCA))
    open_clip.add_model_config(config)
    if not weights.exists():
        logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that it starts from random weights
        torch.manual_seed(seed)
        torch.save(seeded_coca("tiny-coca").state_dict(), weights)
    return {"model": str(config), "pretrained": str(weights)}


def write_tiny_models(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Write the stand-in models (once) and return the recipe settings that use them."""
    import logging

    import open_clip
    import torch

    from svdcli.curate.scorers.aesthetic import laion_mlp

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"clip_model": folder / "tiny-clip.json", "clip_weights": folder / "tiny-clip.pt",
             "aesthetic": folder / "tiny-aesthetic.pth", "coca_model": folder / "tiny-coca.json",
             "coca_weights": folder / "tiny-coca.pt"}
    if not all(p.exists() for p in files.values()):
        logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that it starts from random weights
        files["clip_model"].write_text(json.dumps(TINY_CLIP))
        files["coca_model"].write_text(json.dumps(TINY_COCA))
        open_clip.add_model_config(files["clip_model"])
        open_clip.add_model_config(files["coca_model"])
        torch.manual_seed(seed)
        torch.save(open_clip.create_model("tiny-clip").state_dict(), files["clip_weights"])
        torch.save(laion_mlp(768).state_dict(), files["aesthetic"])
        torch.save(seeded_coca("tiny-coca").state_dict(), files["coca_weights"])
    return {"clip.model": str(files["clip_model"]), "clip.pretrained": str(files["clip_weights"]),
            "clip.aesthetic": str(files["aesthetic"]), "caption.model": str(files["coca_model"]),
            "caption.pretrained": str(files["coca_weights"])}


# --- transformers stand-ins: a video-language model (Qwen2.5-VL layout) and a causal LM --------------
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>", "[UNK]"]
# ChatML with Qwen2.5-VL's vision placeholders: the processor expands each pad into the frames' tokens
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ("a an the one two man woman person people dog cat bird horse car boat train street road city beach sea "
         "river forest field mountain sky snow rain sun night day room kitchen table window door building crowd "
         "walks runs drives flies swims jumps sits stands dances plays talks looks moves turns falls rides holds "
         "slowly quickly camera pans tilts zooms tracks static close wide shot view aerial scene video clip frame "
         "red blue green white black bright dark small large old young in on at with of and through over under "
         "near while is are user assistant")


def tiny_tokenizer():
    """A word-level tokenizer trained here (no download) on the default prompts and a small vocabulary,
    with ChatML's and Qwen2.5-VL's special tokens: generated captions read as words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    from svdcli.curate.scorers.captioning.prompts import SUMMARY_PROMPT, VIDEO_PROMPT

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([WORDS, VIDEO_PROMPT, SUMMARY_PROMPT], trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS))
    return Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token="[UNK]", chat_template=CHAT_TEMPLATE)


# Weights drawn wider than transformers' default (std 0.02): a tiny model's output then depends on
# its inputs (frames, prompt, captions) instead of repeating one sentence for all of them.
INIT_STD = 0.3


def _text_config(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                initializer_range=INIT_STD, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.pad_token_id)


def write_tiny_vlm(folder: str | Path, seed: int = 0) -> Path:
    """A Qwen2.5-VL with a 2-layer vision tower and a 2-layer 32-wide language model, seeded random
    weights, and its processor (video frames resized to 4..16 patches of 28 px), saved as a model folder."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {**_text_config(tokenizer), "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]}}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                                             out_hidden_size=32, window_size=56, fullatt_block_indexes=[1],
                                             initializer_range=INIT_STD),
        initializer_range=INIT_STD,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], eos_token_id=text["eos_token_id"],
        pad_token_id=text["pad_token_id"])
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=CHAT_TEMPLATE)
    model.generation_config.eos_token_id = text["eos_token_id"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_llm(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer 32-wide Qwen2 causal LM with seeded random weights and the same tokenizer, saved as a folder."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config(**_text_config(tokenizer))).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
