"""`svd curate caption`: CoCa, video-language model and LLM-summary captions (its help text; the command is built from the stage's declaration)."""
from __future__ import annotations

HELP = """Caption every ok clip, as the SVD paper's LVD corpus did (three captions per clip) or as curation pipelines do now (a vision-language model over several frames).

--model coca_ViT-L-14 (default): CoCa on the clip's middle frame -> caption_coca. --model vlm: a transformers vision-language model over --frames frames spread evenly over the clip by timestamp -> caption_video (--pretrained: a Hugging Face model id or a local folder; default Qwen/Qwen2.5-VL-7B-Instruct). --coca coca_ViT-L-14 beside --model vlm makes the CoCa caption in the same run. --summarize MODEL: a causal LM (id or folder) writes caption_summary from the CoCa and video captions (made in this run, or read from the input). `caption` is the one --use names (auto: summary, else video, else coca); clip_score, the filter and `svd pack` read it. Columns of captions a run does not make keep their input values.

Decoding: the VLM and the LLM decode greedily, so a clip's caption does not depend on the other clips of its batch (exactly so in fp32 on CPU; in bf16 on a GPU a batch may round differently); --engine auto runs them on vLLM when it is installed and a GPU is visible, else on transformers. CoCa: beam search by default; --generation top_k / top_p sample, seeded with --seed per batch. bf16 on GPU. Weights are never downloaded silently offline: a model missing from the Hugging Face cache stops the run with what to fetch; with network access it is fetched into that cache.

Prompts: --prompt-file holds the VLM's prompt ({frames} and {seconds} are filled in); --summary-prompt-file the LLM's ({coca} and {video} required). The progress bar and the last line show output tokens per second (on Ray also per actor).

Resumes after an interruption; a clip that cannot be read gets a `caption_error` instead of stopping the run."""


def after(result) -> str:
    """Output tokens and their rate, before the summary."""
    from svdcli.curate.stages.caption import throughput_line

    return throughput_line(result)
