"""`svd curate caption`: CoCa, video-language model and LLM-summary captions (parse and dispatch only)."""
from __future__ import annotations

import typer

from svdcli.cli.common import check_rank, console, print_stage_result, user_errors
from svdcli.cli.curate_cmds.options import (
    Device, ExecutorName, Manifest, MaxErrorRate, Out, Progress, RayAddress, Rank, Workers, WorldSize)
from svdcli.cli.curate_cmds.progress import stage_bars

HELP = """Caption every ok clip, as the SVD paper's LVD corpus did (three captions per clip) or as curation pipelines do now (a vision-language model over several frames).

--model coca_ViT-L-14 (default): CoCa on the clip's middle frame -> caption_coca. --model vlm: a transformers vision-language model over --frames frames spread evenly over the clip by timestamp -> caption_video (--pretrained: a Hugging Face model id or a local folder; default Qwen/Qwen2.5-VL-7B-Instruct). --coca coca_ViT-L-14 beside --model vlm makes the CoCa caption in the same run. --summarize MODEL: a causal LM (id or folder) writes caption_summary from the CoCa and video captions (made in this run, or read from the input). `caption` is the one --use names (auto: summary, else video, else coca); clip_score, the filter and `svd pack` read it. Columns of captions a run does not make keep their input values.

Decoding: the VLM and the LLM decode greedily, so a clip's caption does not depend on the other clips of its batch (exactly so in fp32 on CPU; in bf16 on a GPU a batch may round differently); --engine auto runs them on vLLM when it is installed and a GPU is visible, else on transformers. CoCa: beam search by default; --generation top_k / top_p sample, seeded with --seed per batch. bf16 on GPU. Weights are never downloaded silently offline: a model missing from the Hugging Face cache stops the run with what to fetch; with network access it is fetched into that cache.

Prompts: --prompt-file holds the VLM's prompt ({frames} and {seconds} are filled in); --summary-prompt-file the LLM's ({coca} and {video} required). The progress bar and the last line show output tokens per second (on Ray also per actor).

Resumes after an interruption; a clip that cannot be read gets a `caption_error` instead of stopping the run."""


def register(app: typer.Typer) -> None:
    @app.command("caption", help=HELP)
    @user_errors
    def caption(
        manifest: Manifest,
        out: Out = None,
        model: str = typer.Option("coca_ViT-L-14", help="coca_ViT-L-14 (or another open_clip CoCa name, or a "
                                  "model-config .json); vlm: a transformers vision-language model; none: no "
                                  "captioner (with --summarize: summarize the input's captions)."),
        pretrained: str = typer.Option("", help="CoCa: open_clip tag or checkpoint file (default "
                                       "mscoco_finetuned_laion2b_s13b_b90k); vlm: a Hugging Face model id or a model "
                                       "folder (default Qwen/Qwen2.5-VL-7B-Instruct)."),
        coca: str = typer.Option("none", help="With --model vlm: also caption the middle frame with this CoCa "
                                 "model (caption_coca)."),
        coca_pretrained: str = typer.Option("", help="Tag or checkpoint file of --coca (default "
                                            "mscoco_finetuned_laion2b_s13b_b90k)."),
        summarize: str = typer.Option("none", help="A causal LM (Hugging Face id or folder) that writes "
                                      "caption_summary from caption_coca and caption_video."),
        use: str = typer.Option("auto", help="Which caption becomes `caption`: auto | coca | video | summary."),
        engine: str = typer.Option("auto", help="Engine of the VLM and the LLM: auto | transformers | vllm."),
        frames: int = typer.Option(8, min=1, help="Frames the VLM sees, at the centres of equal slices of the clip."),
        frame_size: int = typer.Option(448, min=28, help="Long side (px) of the VLM's frames as decoded (never "
                                       "upscaled; the model's processor may resize them again)."),
        frames_as: str = typer.Option("auto", help="auto | video | images: how frames reach the VLM (auto: a "
                                      "video when its processor takes one)."),
        prompt_file: str = typer.Option("", help="Text file with the VLM's prompt template (default: a built-in "
                                        "one-to-two-sentence description prompt)."),
        summary_prompt_file: str = typer.Option("", help="Text file with the summary prompt template; must "
                                                "contain {coca} and {video}."),
        max_new_tokens: int = typer.Option(128, min=1, help="Most tokens the VLM and the LLM write per caption."),
        generation: str = typer.Option("beam_search", help="CoCa decoding: beam_search | top_k | top_p."),
        seq_len: int = typer.Option(30, min=2, help="CoCa: maximum caption length in tokens."),
        min_seq_len: int = typer.Option(5, min=1, help="CoCa: minimum caption length in tokens."),
        num_beams: int = typer.Option(6, min=1, help="CoCa: beams (beam_search)."),
        num_beam_groups: int = typer.Option(3, min=1, help="CoCa: diverse beam groups (beam_search)."),
        top_k: int = typer.Option(1, min=1, help="CoCa: keep the k most likely tokens (top_k)."),
        top_p: float = typer.Option(0.1, min=0.0, max=1.0, help="CoCa: nucleus mass (top_p)."),
        temperature: float = typer.Option(1.0, min=0.0, help="CoCa: sampling temperature (top_k, top_p)."),
        repetition_penalty: float = typer.Option(1.0, min=0.0, help="CoCa: penalty for repeated tokens."),
        seed: int = typer.Option(0, help="CoCa: seed for the sampling decoders."),
        batch_size: int = typer.Option(8, min=1, help="Clips per model batch."),
        device: Device = "auto",
        workers: Workers = 1,
        rank: Rank = 0,
        world_size: WorldSize = 1,
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
        progress: Progress = True,
        max_error_rate: MaxErrorRate = 1.0,
    ) -> None:
        from svdcli.curate.executors import executor_for
        from svdcli.curate.stages.caption import run_caption, summarize as summary_line, throughput_line

        check_rank(rank, world_size)
        result, written = run_caption(
            manifest, out, workers=workers, rank=rank, world_size=world_size,
            executor=executor_for(executor, ray_address), progress=stage_bars(progress),
            model=model, pretrained=pretrained, coca=coca, coca_pretrained=coca_pretrained, summarize=summarize,
            use=use, engine=engine, frames=frames, frame_size=frame_size, frames_as=frames_as,
            prompt_file=prompt_file, summary_prompt_file=summary_prompt_file, max_new_tokens=max_new_tokens,
            generation=generation, seq_len=seq_len, min_seq_len=min_seq_len, num_beams=num_beams,
            num_beam_groups=num_beam_groups, top_k=top_k, top_p=top_p, temperature=temperature,
            repetition_penalty=repetition_penalty, seed=seed, batch_size=batch_size, device=device)
        console().print(throughput_line(result), markup=False)
        print_stage_result("caption", result, written, summary_line, max_error_rate)
