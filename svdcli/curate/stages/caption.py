"""Caption stage: a CoCa caption of each clip's middle frame (SVD paper, section 3).

CoCa runs through open_clip (`coca_ViT-L-14`, tag `mscoco_finetuned_laion2b_s13b_b90k` by
default). Decoding is open_clip's `generate`: beam search (default, deterministic), or top-k /
top-p sampling seeded per batch (so sampled captions depend on how clips were batched; greedy
decoding is `--generation top_k --top-k 1`). open_clip 3.3's beam search needs
transformers < 4.56, which the project pins.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import pyarrow as pa

from svdcli.curate.frames import middle_time, read_clip_frames
from svdcli.curate.per_clip import run_clip_stage
from svdcli.curate.runner import pending
from svdcli.curate.scorers.open_clip_models import autocast, clip_read_size, load_open_clip, to_model_input
from svdcli.curate.stage import ClipStage, Resources, StageSpec, config_from, gpus_for
from svdcli.errors import SvdError
from svdcli.manifest.schema import Column
from svdcli.weights import OpenClipWeights, check_device, open_clip_weights, pick_device

GENERATION_TYPES = ("beam_search", "top_k", "top_p")
SOT, EOT = "<start_of_text>", "<end_of_text>"


def clean_caption(text: str) -> str:
    """Decoded tokens -> caption: drop the start token, everything from the end token, spaces."""
    text = text.replace(SOT, "").split(EOT)[0]
    text = " ".join(text.split())
    return text.removesuffix(" .").strip()


@dataclass
class CaptionConfig:
    model: str = "coca_ViT-L-14"  # open_clip CoCa model name or a model-config .json
    pretrained: str = "mscoco_finetuned_laion2b_s13b_b90k"  # tag or checkpoint file
    generation: str = "beam_search"  # beam_search | top_k | top_p
    seq_len: int = 30  # maximum caption length in tokens, start token included
    min_seq_len: int = 5
    num_beams: int = 6
    num_beam_groups: int = 3
    top_k: int = 1
    top_p: float = 0.1
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"

    def check(self) -> None:
        if self.generation not in GENERATION_TYPES:
            raise SvdError(f"--generation must be one of {', '.join(GENERATION_TYPES)}, not {self.generation!r}")
        if self.seq_len <= self.min_seq_len:
            raise SvdError(f"--seq-len ({self.seq_len}) must be larger than --min-seq-len ({self.min_seq_len})")
        if self.generation == "beam_search" and self.num_beams % self.num_beam_groups:
            raise SvdError(f"--num-beams ({self.num_beams}) must be a multiple of --num-beam-groups "
                           f"({self.num_beam_groups})")


class Captioner:
    """A CoCa model that captions batches of frames."""

    def __init__(self, weights: OpenClipWeights, config: CaptionConfig, device: str = "cpu"):
        self.config, self.device = config, device
        self.net = load_open_clip(weights, config.model, device)
        if not hasattr(self.net, "generate"):
            raise SvdError(f"{weights.label} is not a captioning (CoCa) model; use e.g. coca_ViT-L-14")
        cfg = self.net.visual.preprocess_cfg
        self.side = int(np.atleast_1d(cfg["size"])[0])
        self.mean, self.std = cfg["mean"], cfg["std"]

    def caption(self, frames: np.ndarray) -> list[str]:
        """uint8 (N, H, W, 3) frames with short side `self.side` -> one caption each."""
        import open_clip
        import torch

        c = self.config
        out: list[str] = []
        for i in range(0, len(frames), c.batch_size):
            x = to_model_input(frames[i:i + c.batch_size], self.side, self.mean, self.std, self.device)
            torch.manual_seed(c.seed)  # only the sampling decoders draw random numbers
            with torch.no_grad(), autocast(self.device):
                tokens = self.net.generate(x, generation_type=c.generation, seq_len=c.seq_len,
                                           min_seq_len=c.min_seq_len, num_beams=c.num_beams,
                                           num_beam_groups=c.num_beam_groups, top_k=c.top_k, top_p=c.top_p,
                                           temperature=c.temperature, repetition_penalty=c.repetition_penalty)
            out.extend(clean_caption(open_clip.decode(t)) for t in tokens)
        return out


COLUMNS = (
    Column("caption", pa.string(), "caption", "CoCa caption of the clip's middle frame"),
    Column("caption_model", pa.string(), "caption", "'<open_clip model>:<pretrained tag or checkpoint file name>'"),
    Column("caption_error", pa.string(), "caption", "error message when captioning failed"),
)


class CaptionStage(ClipStage):
    name = "caption"
    columns = ("clip_id", *(c.name for c in COLUMNS))
    loaded = ("captioner",)

    def __init__(self, config: CaptionConfig):
        config.check()
        check_device(config.device)
        self.config = config
        self.weights = open_clip_weights(config.model, config.pretrained)  # fail early, in the parent
        self.captioner = None

    def settings(self) -> dict:
        s = asdict(self.config)
        s.update(model=self.weights.label, pretrained=None, batch_size=None, device=None)
        if s["generation"] == "beam_search":
            s.update(top_k=None, top_p=None, temperature=None, seed=None)
        return s

    def resources(self) -> Resources:
        return Resources(gpus=gpus_for(self.config.device), loads_model=True)

    def setup(self) -> None:
        self.captioner = Captioner(self.weights, self.config, pick_device(self.config.device))

    def process(self, payload: dict) -> list[dict]:
        size = lambda c: clip_read_size(c["width"], c["height"], self.captioner.side)  # noqa: E731
        ok, rows = [], []
        for clip, frames in read_clip_frames(payload, lambda c: [middle_time(c)], size):
            if isinstance(frames, Exception):
                rows.append({"clip_id": clip["clip_id"], "caption_error": f"{type(frames).__name__}: {frames}"})
            else:
                ok.append((clip, frames[0]))
        if ok:
            captions = self.captioner.caption(np.stack([f for _, f in ok]))
            for (clip, _), text in zip(ok, captions):
                rows.append({"clip_id": clip["clip_id"], "caption": text, "caption_model": self.weights.label})
        return rows


def run_caption(manifest_path, out_path=None, *, workers: int = 1, progress=None, rank: int = 0,
                world_size: int = 1, executor=None, **settings):
    """Caption the middle frame of every ok clip; settings are CaptionConfig fields.

    Returns run_clip_stage's (RunResult, written path or None).
    """
    stage = CaptionStage(config_from(CaptionConfig, settings, "caption"))
    return run_clip_stage(stage, Path(manifest_path), out_path, workers=workers, progress=progress,
                          rank=rank, world_size=world_size, executor=executor, clips_per_task=32,
                          describe=f"caption ({stage.weights.label})")


def summarize(path: Path) -> str:
    """One line for the CLI: clips captioned, one example, errors."""
    from svdcli.manifest.io import read_manifest

    t = read_manifest(path, columns=["caption", "caption_error"]).to_pydict()
    captions = [c for c in t["caption"] if c is not None]
    errors = sum(e is not None for e in t["caption_error"])
    example = f'; e.g. "{captions[0]}"' if captions else ""
    return f"caption: {len(captions)} clips captioned{example}; {errors} errors -> {path}"


def recipe_step(src: Path, out: Path, settings: dict, opts) -> str | None:
    """The caption step of a recipe: None once its manifest is written, else how far all ranks are."""
    return pending(run_caption(src, out, **opts.stage_kwargs(), **settings))


SPEC = StageSpec(
    name="caption",
    columns=COLUMNS,
    config=CaptionConfig,
    run=recipe_step,
    bounds=("seq_len >= 2", "min_seq_len >= 1", "num_beams >= 1", "num_beam_groups >= 1", "top_k >= 1",
            "top_p >= 0", "top_p <= 1", "temperature >= 0", "repetition_penalty >= 0", "batch_size >= 1"),
    unbounded=("seed",),
    check=lambda settings: CaptionConfig(**settings).check(),
)
