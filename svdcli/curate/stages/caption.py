"""Caption stage: the SVD paper's three captions per clip (Sec. 3, App. C), and `caption` chosen among them.

- `caption_coca`: CoCa (open_clip) on the clip's middle frame, `--model coca_ViT-L-14` (default),
  or alongside a video captioner with `--coca coca_ViT-L-14`;
- `caption_video`: a transformers vision-language model over `frames` frames spread evenly over
  the clip by timestamp, `--model vlm --pretrained Qwen/Qwen2.5-VL-7B-Instruct` (the default VLM);
- `caption_summary`: a causal LM's summary of both (`--summarize MODEL`); a caption this run does
  not make is read from the input manifest (a CoCa run first, a VLM run with `--summarize` next).
- `caption`: the one `use` names (auto: the summary, else the video caption, else CoCa's), which
  the clip stage's clip_score, the filter (`caption_words`, `caption_error`) and `svd pack` read.

Columns of captions this run does not make are left as the input has them. The engines are
`svdcli/curate/scorers/captioning/` (pure: frames or captions in, text out); the VLM and the LLM
run on transformers or vLLM (`engine`, resolved where the model loads, on the worker).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from svdcli.curate.frames import even_times, middle_time, read_clip_frames
from svdcli.curate.per_clip import run_clip_stage
from svdcli.curate.scorers.captioning.coca import DECODING, GENERATION_TYPES
from svdcli.curate.settings import DEVICE_HELP, setting
from svdcli.curate.stage import ClipStage, Resources, StageSpec, config_from, gpus_for
from svdcli.errors import SvdError
from svdcli.manifest.schema import Column

COCA_TAG = "mscoco_finetuned_laion2b_s13b_b90k"
DEFAULT_VLM = "Qwen/Qwen2.5-VL-7B-Instruct"
KINDS = ("coca", "video", "summary")  # the paper's three captions, in the order they are made
USES = ("auto", *KINDS)
NOT_COCA = ("vlm", "none")  # --model values that are no open_clip CoCa model


@dataclass
class CaptionConfig:
    model: str = setting("coca_ViT-L-14", "coca_ViT-L-14 (or another open_clip CoCa name, or a model-config .json); "
                         "vlm: a transformers vision-language model; none: no captioner (with --summarize: summarize "
                         "the input's captions).")
    pretrained: str = setting("", "CoCa: open_clip tag or checkpoint file (default mscoco_finetuned_laion2b_s13b_b90k); "
                              "vlm: a Hugging Face model id or a model folder (default Qwen/Qwen2.5-VL-7B-Instruct).")
    coca: str = setting("none", "With --model vlm: also caption the middle frame with this CoCa model (caption_coca).")
    coca_pretrained: str = setting("", "Tag or checkpoint file of --coca (default mscoco_finetuned_laion2b_s13b_b90k).")
    summarize: str = setting("none", "A causal LM (Hugging Face id or folder) that writes caption_summary from "
                             "caption_coca and caption_video.")
    use: str = setting("auto", "Which caption becomes `caption`: auto | coca | video | summary.")
    engine: str = setting("auto", "Engine of the VLM and the LLM: auto | transformers | vllm.")
    frames: int = setting(8, "Frames the VLM sees, at the centres of equal slices of the clip.", ge=1)
    frame_size: int = setting(448, "Long side (px) of the VLM's frames as decoded (never upscaled; the model's "
                              "processor may resize them again).", ge=28)
    frames_as: str = setting("auto", "auto | video | images: how frames reach the VLM (auto: a video when its "
                             "processor takes one).")
    prompt_file: str = setting("", "Text file with the VLM's prompt template (default: a built-in "
                               "one-to-two-sentence description prompt).")
    summary_prompt_file: str = setting("", "Text file with the summary prompt template; must contain {coca} and "
                                       "{video}.")
    max_new_tokens: int = setting(128, "Most tokens the VLM and the LLM write per caption.", ge=1)
    generation: str = setting("beam_search", "CoCa decoding: beam_search | top_k | top_p.")
    seq_len: int = setting(30, "CoCa: maximum caption length in tokens.", ge=2)  # the start token included
    min_seq_len: int = setting(5, "CoCa: minimum caption length in tokens.", ge=1)
    num_beams: int = setting(6, "CoCa: beams (beam_search).", ge=1)
    num_beam_groups: int = setting(3, "CoCa: diverse beam groups (beam_search).", ge=1)
    top_k: int = setting(1, "CoCa: keep the k most likely tokens (top_k).", ge=1)
    top_p: float = setting(0.1, "CoCa: nucleus mass (top_p).", ge=0, le=1)
    temperature: float = setting(1.0, "CoCa: sampling temperature (top_k, top_p).", ge=0)
    repetition_penalty: float = setting(1.0, "CoCa: penalty for repeated tokens.", ge=0)
    seed: int = setting(0, "CoCa: seed for the sampling decoders.")
    batch_size: int = setting(8, "Clips per model batch.", ge=1)
    device: str = setting("auto", DEVICE_HELP)

    def check(self) -> None:
        from svdcli.curate.scorers.captioning.vlm import FRAMES_AS
        from svdcli.curate.scorers.captioning.vllm_engine import ENGINES

        for name, value, allowed in (("--use", self.use, USES), ("--engine", self.engine, ENGINES),
                                     ("--frames-as", self.frames_as, FRAMES_AS),
                                     ("--generation", self.generation, GENERATION_TYPES)):
            if value not in allowed:
                raise SvdError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.model not in NOT_COCA and self.coca != "none":
            raise SvdError(f"--coca {self.coca} is for a CoCa caption beside --model vlm; --model "
                           f"{self.model} is CoCa already")
        if self.model == "none" and self.summarize == "none" and self.coca == "none":
            raise SvdError("--model none makes no caption: add --summarize MODEL (to summarize the input's "
                           "captions) or --coca MODEL")
        if self.seq_len <= self.min_seq_len:
            raise SvdError(f"--seq-len ({self.seq_len}) must be larger than --min-seq-len ({self.min_seq_len})")
        if self.generation == "beam_search" and self.num_beams % self.num_beam_groups:
            raise SvdError(f"--num-beams ({self.num_beams}) must be a multiple of --num-beam-groups "
                           f"({self.num_beam_groups})")

    @property
    def coca_model(self) -> str | None:
        """The CoCa model this run captions middle frames with, if any."""
        if self.model not in NOT_COCA:
            return self.model
        return None if self.coca == "none" else self.coca

    def made(self) -> tuple[str, ...]:
        """The caption kinds this run makes."""
        made = (("coca",) if self.coca_model else ()) + (("video",) if self.model == "vlm" else ())
        return made + (("summary",) if self.summarize != "none" else ())


def read_prompt(path: str, flag: str, allowed: tuple[str, ...], required: tuple[str, ...], default: str) -> str:
    """The prompt template in `path` ('' = `default`), checked (prompts.check_template)."""
    from svdcli.curate.scorers.captioning.prompts import check_template

    if not path:
        return default
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SvdError(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SvdError(f"{flag} {path} cannot be read as UTF-8 text: {type(exc).__name__}: {exc}") from None
    return check_template(text.strip(), allowed, required, f"{flag} {path}")


@dataclass(frozen=True)
class Resolved:
    """What a caption run uses, found before any work: weights on disk, prompt texts, labels."""

    coca: object = None  # OpenClipWeights
    vlm: object = None  # HfModel
    summary: object = None  # HfModel
    prompt: str = ""
    summary_prompt: str = ""

    def labels(self, engine: str | None = None) -> dict[str, str]:
        """Caption kind -> the model that makes it (with the engine, for the transformers models)."""
        out = {"coca": self.coca.label if self.coca else None,
               "video": self.vlm.label if self.vlm else None, "summary": self.summary.label if self.summary else None}
        return {k: (f"{v} ({engine})" if engine and k != "coca" else v) for k, v in out.items() if v}


def resolve(config: CaptionConfig) -> Resolved:
    """Find every model and prompt the settings name; a missing one stops the run here (one line)."""
    from svdcli.curate.scorers.captioning import prompts
    from svdcli.weights import hf_model, open_clip_weights

    made = config.made()
    coca = None
    if "coca" in made:
        tag = (config.coca_pretrained if config.model in NOT_COCA else config.pretrained) or COCA_TAG
        coca = open_clip_weights(config.coca_model, tag)
    vlm = hf_model(config.pretrained or DEFAULT_VLM, "--pretrained") if "video" in made else None
    summary = hf_model(config.summarize, "--summarize") if "summary" in made else None
    prompt = read_prompt(config.prompt_file, "--prompt-file", prompts.VIDEO_FIELDS, (), prompts.VIDEO_PROMPT)
    summary_prompt = read_prompt(config.summary_prompt_file, "--summary-prompt-file", prompts.SUMMARY_FIELDS,
                                 prompts.SUMMARY_FIELDS, prompts.SUMMARY_PROMPT)
    return Resolved(coca, vlm, summary, prompt, summary_prompt)


def merge_labels(previous: str | None, labels: dict[str, str]) -> str:
    """`caption_model`: 'coca=...; video=...; summary=...' with this run's models in place of the input's.

    A label written before captions had kinds ('coca_ViT-L-14:tag') counts as the CoCa one.
    """
    entries = {}
    for part in (previous or "").split("; "):
        if part:
            kind, _, label = part.partition("=") if "=" in part.split(":")[0] else ("coca", "", part)
            entries[kind] = label
    entries.update(labels)
    return "; ".join(f"{k}={entries[k]}" for k in KINDS if k in entries)


COLUMNS = (
    Column("caption", pa.string(), "caption",
           "the caption the recipe chose (`caption.use`; caption_source says which): what clip_score, the filter "
           "and `svd pack` read"),
    Column("caption_coca", pa.string(), "caption", "CoCa caption of the clip's middle frame"),
    Column("caption_video", pa.string(), "caption",
           "vision-language model caption of N frames spread evenly over the clip (caption.frames)"),
    Column("caption_summary", pa.string(), "caption", "LLM summary of caption_coca and caption_video"),
    Column("caption_source", pa.string(), "caption", "which caption `caption` holds: coca, video or summary"),
    Column("caption_words", pa.int32(), "caption", "words in `caption` (whitespace-separated)"),
    Column("caption_tokens", pa.int32(), "caption",
           "output tokens the models generated for the clip in its last caption run (all its captions)"),
    Column("caption_model", pa.string(), "caption",
           "'coca=<open_clip model>:<tag or file>; video=<model> (<engine>); summary=<model> (<engine>)'"),
    Column("caption_error", pa.string(), "caption", "why the clip has no `caption` (unreadable frames, a failed "
           "model batch, no input to summarize)"),
)



class CaptionStage(ClipStage):
    name = "caption"
    loaded = ("coca", "vlm", "summarizer")
    throughput = ("caption_tokens", "tokens")

    def __init__(self, config: CaptionConfig, present: set[str] | frozenset = frozenset(), source: str = "the input"):
        """`present`: the input manifest's columns (`source` names it in messages)."""
        from svdcli.weights import check_device

        config.check()
        check_device(config.device)
        self.config, self.made = config, config.made()
        self.use = self.made[-1] if config.use == "auto" else config.use
        self.inputs = self._inputs(present, source)
        self.resolved = resolve(config)  # fail early, in the parent
        self.columns = ("clip_id", *(f"caption_{k}" for k in self.made), "caption", "caption_source", "caption_model",
                        "caption_words", "caption_tokens", "caption_error")
        self.carries = (*(f"caption_{k}" for k in self.inputs),
                        *(["caption_model"] if "caption_model" in present else []))
        self.reads_if_present = ("status", *self.carries)
        self.engine = None
        self.coca = self.vlm = self.summarizer = None

    def _inputs(self, present, source: str) -> tuple[str, ...]:
        """The captions this run reads from the input (not made here): the summary's, and the one `use` names."""
        needed = {}
        if "summary" in self.made:
            needed.update({k: "--summarize" for k in ("coca", "video") if k not in self.made})
        if self.use not in self.made:
            needed.setdefault(self.use, f"--use {self.use}")
        for kind, why in needed.items():
            if f"caption_{kind}" not in present:
                make = ("add --coca coca_ViT-L-14 (beside --model vlm)" if kind == "coca" else
                        "add --model vlm" if kind == "video" else "add --summarize MODEL")
                raise SvdError(f"{why} needs caption_{kind}, which this run does not make and {source} does not "
                               f"have: {make}, or run `svd curate caption` for it first")
        return tuple(needed)

    def settings(self) -> dict:
        c = self.config
        s: dict = {"made": self.made, "use": self.use, "models": self.resolved.labels(), "inputs": self.inputs}
        if "coca" in self.made:
            decoding = {k: getattr(c, k) for k in DECODING}
            if decoding["generation"] == "beam_search":
                decoding.update(top_k=None, top_p=None, temperature=None, seed=None)
            s["coca"] = decoding
        if "video" in self.made:
            s["video"] = {"frames": c.frames, "frame_size": c.frame_size, "frames_as": c.frames_as,
                          "prompt": self.resolved.prompt, "max_new_tokens": c.max_new_tokens}
        if "summary" in self.made:
            s["summary"] = {"prompt": self.resolved.summary_prompt, "max_new_tokens": c.max_new_tokens}
        return s  # batch size, device and engine change no caption (greedy decoding; tested)

    def resources(self) -> Resources:
        return Resources(gpus=gpus_for(self.config.device), loads_model=True)

    def setup(self) -> None:
        from svdcli.curate.scorers.captioning.vllm_engine import resolve_engine
        from svdcli.weights import pick_device

        c, r = self.config, self.resolved
        device = pick_device(c.device)
        if "coca" in self.made:
            from svdcli.curate.scorers.captioning.coca import CocaCaptioner

            self.coca = CocaCaptioner(r.coca, c.coca_model, c, device, c.batch_size)
        if {"video", "summary"} & set(self.made):
            self.engine = resolve_engine(c.engine, device)
            self.vlm, self.summarizer = build_engines(self, device)

    def process(self, payload: dict) -> list[dict]:
        frames, failed = self._read(payload)
        ok = [c for c in payload["clips"] if c["clip_id"] not in failed]
        made = self._generate(ok, frames)
        labels = self.resolved.labels(self.engine)
        return [self._row(c, made, failed.get(c["clip_id"]), labels) for c in payload["clips"]]

    def _read(self, payload: dict) -> tuple[dict, dict]:
        """kind -> {clip_id: uint8 frames} for CoCa (the middle frame) and the VLM; clip_id -> why unreadable."""
        from svdcli.curate.scorers.open_clip_models import clip_read_size
        from svdcli.video.seek import analysis_size

        reads = []
        if self.coca is not None:
            reads.append(("coca", lambda c: [middle_time(c)],
                          lambda c: clip_read_size(c["width"], c["height"], self.coca.side)))
        if self.vlm is not None:
            reads.append(("video", lambda c: even_times(c, self.config.frames),
                          lambda c: analysis_size(c["width"], c["height"], self.config.frame_size, upscale=False)))
        frames: dict = {kind: {} for kind, _, _ in reads}
        failed: dict = {}
        for kind, times, size in reads:  # one pass over the video per kind (different times and sizes)
            for clip, got in read_clip_frames(payload, times, size):
                if isinstance(got, Exception):
                    failed.setdefault(clip["clip_id"], f"{type(got).__name__}: {got}")
                else:
                    frames[kind][clip["clip_id"]] = got
        return frames, failed

    def _generate(self, clips: list[dict], frames: dict) -> dict:
        """kind -> {clip_id: Generated} for the captions this run makes."""
        made: dict = {kind: {} for kind in KINDS}
        ids = [c["clip_id"] for c in clips]
        if clips and self.coca is not None:
            made["coca"] = dict(zip(ids, self.coca.caption(np.stack([frames["coca"][i][0] for i in ids]))))
        if clips and self.vlm is not None:
            seconds = [c["end_time"] - c["start_time"] for c in clips]
            made["video"] = dict(zip(ids, self.vlm.caption([frames["video"][i] for i in ids], seconds)))
        if clips and self.summarizer is not None:
            pairs = {c["clip_id"]: (self._caption(c, "coca", made), self._caption(c, "video", made)) for c in clips}
            have = [i for i, (a, b) in pairs.items() if a and b]
            if have:
                made["summary"] = dict(zip(have, self.summarizer.summarize([pairs[i] for i in have])))
        return made

    def _caption(self, clip: dict, kind: str, made: dict) -> str | None:
        """A clip's caption of `kind`: made in this run, else the input's."""
        if kind in self.made:
            got = made[kind].get(clip["clip_id"])
            return got.text if got else None
        return clip.get(f"caption_{kind}")

    def _row(self, clip: dict, made: dict, failure: str | None, labels: dict) -> dict:
        cid = clip["clip_id"]
        if failure:
            return {"clip_id": cid, "caption_error": failure}
        row = {"clip_id": cid, **{f"caption_{k}": self._caption(clip, k, made) for k in self.made}}
        chosen = self._caption(clip, self.use, made)
        row.update(caption=chosen, caption_source=self.use if chosen is not None else None,
                   caption_words=len(chosen.split()) if chosen is not None else None,
                   caption_tokens=sum(made[k][cid].tokens for k in self.made if cid in made[k]),
                   caption_model=merge_labels(clip.get("caption_model"), labels))
        if chosen is None:
            lacking = [k for k in ("coca", "video") if not self._caption(clip, k, made)]
            row["caption_error"] = (f"no caption_{' or caption_'.join(lacking)} to summarize" if self.use == "summary"
                                    else f"the input has no caption_{self.use} for this clip")
        return row


def build_engines(stage: CaptionStage, device: str) -> tuple:
    """The VLM captioner and the summarizer of a set-up stage, on its engine."""
    c, r, made = stage.config, stage.resolved, stage.made
    vlm = summarizer = None
    if stage.engine == "vllm":
        from svdcli.curate.scorers.captioning.vllm_engine import VllmSummarizer, VllmVlm

        engines = sum(k in made for k in ("video", "summary"))
        share = (0.8 if stage.coca is not None else 0.9) / engines  # the GPU's memory, shared by the engines
        if "video" in made:
            vlm = VllmVlm(r.vlm, r.prompt, frames_as=c.frames_as, max_new_tokens=c.max_new_tokens, frames=c.frames,
                          gpu_share=share)
        if "summary" in made:
            summarizer = VllmSummarizer(r.summary, r.summary_prompt, max_new_tokens=c.max_new_tokens, gpu_share=share)
        return vlm, summarizer
    from svdcli.curate.scorers.captioning.summary import Summarizer
    from svdcli.curate.scorers.captioning.vlm import VlmCaptioner

    if "video" in made:
        vlm = VlmCaptioner(r.vlm, r.prompt, frames_as=c.frames_as, max_new_tokens=c.max_new_tokens, device=device,
                           batch_size=c.batch_size)
    if "summary" in made:
        summarizer = Summarizer(r.summary, r.summary_prompt, max_new_tokens=c.max_new_tokens, device=device,
                                batch_size=c.batch_size)
    return vlm, summarizer


def run_caption(manifest_path, out_path=None, *, workers: int = 1, progress=None, rank: int = 0,
                world_size: int = 1, executor=None, **settings):
    """Caption every ok clip; settings are CaptionConfig fields.

    Returns run_clip_stage's (RunResult, written path or None).
    """
    import pyarrow.parquet as pq

    from svdcli.curate.per_clip import check_inputs

    manifest_path = Path(manifest_path)
    config = config_from(CaptionConfig, settings, "caption")
    check_inputs(CaptionStage, manifest_path, Path(out_path or manifest_path))  # a readable clip manifest
    stage = CaptionStage(config, set(pq.read_schema(manifest_path).names), str(manifest_path))
    describe = "caption (" + ", ".join(f"{k}: {v}" for k, v in stage.resolved.labels().items()) + ")"
    return run_clip_stage(stage, manifest_path, out_path, workers=workers, progress=progress, rank=rank,
                          world_size=world_size, executor=executor, clips_per_task=32, describe=describe)


def summarize(path: Path) -> str:
    """One line for the CLI: clips captioned, which caption is `caption`, words, one example, errors."""
    from svdcli.manifest.io import read_manifest

    t = read_manifest(path, columns=["caption", "caption_source", "caption_words", "caption_error"]).to_pydict()
    captions = [c for c in t["caption"] if c is not None]
    errors = sum(e is not None for e in t["caption_error"])
    sources = sorted({s for s in t["caption_source"] if s})
    words = [w for w in t["caption_words"] if w is not None]
    median = f", median {np.median(words):g} words" if words else ""
    example = f'; e.g. "{captions[0]}"' if captions else ""
    return (f"caption: {len(captions)} clips captioned (caption = {'/'.join(sources) or '-'}{median}){example}; "
            f"{errors} errors -> {path}")


def throughput_line(result) -> str:
    """Output tokens and their rate over the run, and per Ray actor (tokens per busy second)."""
    line = f"caption: {result.metered:,.0f} output tokens in {result.seconds:.1f} s ({result.rate:,.1f} tokens/s)"
    actors = [w for w in result.workers if w.get("busy_seconds")]
    if actors:
        rates = ", ".join(f"{w['metered'] / w['busy_seconds']:,.1f}" for w in actors)
        line += f"; per actor, tokens per busy second: {rates}"
    return line


def preflight(settings: dict) -> None:
    """Before a recipe runs anything: the models and prompt files the caption step will need."""
    config = CaptionConfig(**settings)
    config.check()
    resolve(config)


SPEC = StageSpec(
    name="caption",
    columns=COLUMNS,
    config=CaptionConfig,
    runner=run_caption,
    summary=summarize,
    unbounded=("seed",),
    check=lambda settings: CaptionConfig(**settings).check(),
    preflight=preflight,
    histograms=(("caption_words", "caption length (words)"),),
)
