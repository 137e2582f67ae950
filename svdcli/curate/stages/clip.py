"""CLIP stage: image embeddings of each clip's first, middle and last frame, aesthetic and CLIP scores.

- `aesthetic_score`: a LAION aesthetic head (see scorers/aesthetic.py) on the L2-normalised frame
  embeddings, averaged over the three frames.
- `clip_score`: cosine similarity between each frame embedding and the text embedding of the
  clip's caption (raw cosine, not x100), averaged over the frames; null when the clip has no
  caption (run `svd curate caption` first to get one).
- The embeddings themselves go to a side file `<out stem>.clip_embeddings.parquet` with one row
  per (clip_id, frame): columns clip_id, frame ('first'|'middle'|'last'), time (s), embedding
  (L2-normalised float32 list). During a run each task writes its own file named by the task
  key under `<out>.parts/clip-<fingerprint>.embeddings/`; a rerun rewrites a task's file
  rather than appending, and the files are merged (one row per clip and frame) when the run
  completes, so resuming neither loses nor duplicates embeddings.

The model, its input geometry and the embeddings are `scorers/open_clip_models.py` (shared with
the caption stage).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from svdcli.curate.frames import frame_times, read_clip_frames
from svdcli.curate.parts import parts_folder
from svdcli.curate.per_clip import check_inputs, run_clip_stage
from svdcli.curate.scorers.open_clip_models import ClipEmbedder, clip_read_size, clip_scores
from svdcli.curate.settings import DEVICE_HELP, PRETRAINED_HELP, setting
from svdcli.curate.stage import ClipStage, Resources, StageSpec, config_from, gpus_for
from svdcli.errors import SvdError
from svdcli.manifest.schema import Column
from svdcli.weights import aesthetic_weights, check_device, open_clip_weights, pick_device, register_model_config

FRAME_NAMES = ("first", "middle", "last")


# --- stage -------------------------------------------------------------------------------------------
@dataclass
class ClipConfig:
    model: str = setting("ViT-L-14", "open_clip model name, or a model-config .json.")
    pretrained: str = setting("openai", PRETRAINED_HELP)
    aesthetic: str = setting("laion-mlp", "laion-mlp | laion-linear-l14 | laion-linear-b32 | PATH | "
                                          "hf-hub:REPO/FILE | none.")
    weights_dir: str | None = setting(None, "Folder with the aesthetic heads (else $SVD_WEIGHTS_DIR, "
                                            "~/.cache/svdcli/weights).", path=True)
    batch_size: int = setting(16, "Frames per model batch.", ge=1)
    device: str = setting("auto", DEVICE_HELP)


COLUMNS = (
    Column("aesthetic_score", pa.float32(), "clip",
           "LAION aesthetic head on the L2-normalised image embeddings of the first, middle and last frame, mean "
           "over the 3 frames (~1..10 for the improved MLP); null with --aesthetic none"),
    Column("clip_score", pa.float32(), "clip",
           "raw cosine(frame image embedding, caption text embedding), mean over the first, middle and last "
           "frame; null when the clip had no caption when the clip stage ran"),
    Column("clip_model", pa.string(), "clip",
           "'<open_clip model>:<pretrained tag or checkpoint file name>'; embeddings are in "
           "<manifest stem>.clip_embeddings.parquet"),
    Column("clip_error", pa.string(), "clip", "error message when embeddings could not be computed"),
)


class ClipEmbedStage(ClipStage):
    name = "clip"
    columns = ("clip_id", *(c.name for c in COLUMNS))
    loaded = ("embedder", "head")
    reads_if_present = ("status", "caption")

    def __init__(self, config: ClipConfig, captions: dict[str, str] | None = None):
        self.config = config
        check_device(config.device)
        # resolve in the parent so a missing file stops the run before any worker starts
        self.weights = open_clip_weights(config.model, config.pretrained)
        self.head_path = None if config.aesthetic == "none" else aesthetic_weights(config.aesthetic, config.weights_dir)
        if self.head_path is not None:
            check_head_width(self.head_path, config.model, self.weights.label)
        self.captions = captions or {}
        self.embeddings_dir: Path | None = None
        self.embedder = self.head = None

    def settings(self) -> dict:
        digest = hashlib.sha1(json.dumps(sorted(self.captions.items())).encode()).hexdigest()[:12]
        return {"model": self.weights.label, "aesthetic": self.head_path.name if self.head_path else None,
                "frames": FRAME_NAMES, "captions": digest if self.captions else None}

    def resources(self) -> Resources:
        return Resources(gpus=gpus_for(self.config.device), loads_model=True)

    def setup(self) -> None:
        from svdcli.curate.scorers.aesthetic import load_aesthetic

        device = pick_device(self.config.device)
        self.embedder = ClipEmbedder.load(self.weights, self.config.model, device, self.config.batch_size)
        if self.head_path is not None:
            self.head = load_aesthetic(self.head_path)

    def process(self, payload: dict) -> list[dict]:
        size = lambda c: clip_read_size(c["width"], c["height"], self.embedder.side)  # noqa: E731
        ok, rows = [], []
        for clip, frames in read_clip_frames(payload, lambda c: frame_times(c, "fml"), size):
            if isinstance(frames, Exception):
                rows.append({"clip_id": clip["clip_id"], "clip_error": f"{type(frames).__name__}: {frames}"})
            else:
                ok.append((clip, frames[[0, len(frames) // 2, -1]]))  # short clips repeat a frame
        if ok:
            emb = self.embedder.embed_images(np.concatenate([f for _, f in ok]))  # (C*3, D)
            emb = emb.view(len(ok), 3, -1)  # (C*3, D) -> (C, 3, D)
            aes = self.aesthetic(emb)
            cos = self.clip_score([c for c, _ in ok], emb)
            for k, (clip, _) in enumerate(ok):
                rows.append({"clip_id": clip["clip_id"], "aesthetic_score": aes[k], "clip_score": cos[k],
                             "clip_model": self.weights.label})
            self.save_embeddings([c for c, _ in ok], emb)
        return rows

    def aesthetic(self, emb) -> list[float | None]:
        from svdcli.curate.scorers.aesthetic import aesthetic

        if self.head is None:
            return [None] * len(emb)
        c, f, d = emb.shape
        return aesthetic(emb.reshape(c * f, d), self.head).view(c, f).mean(1).tolist()  # (C*3,) -> (C,)

    def clip_score(self, clips: list[dict], emb) -> list[float | None]:
        have = [k for k, c in enumerate(clips) if self.captions.get(c["clip_id"])]
        scores: list[float | None] = [None] * len(clips)
        if have:
            text = self.embedder.embed_texts([self.captions[clips[k]["clip_id"]] for k in have])
            for k, s in zip(have, clip_scores(emb[have], text).tolist()):
                scores[k] = s
        return scores

    def save_embeddings(self, clips: list[dict], emb) -> None:
        if self.embeddings_dir is None:
            return
        from svdcli.manifest.io import write_parquet_atomic

        times = [frame_times(c, "fml") for c in clips]
        ids = [c["clip_id"] for c in clips]
        table = embeddings_table(ids, [[t[0], t[len(t) // 2], t[-1]] for t in times], emb.numpy())
        key = hashlib.sha1("|".join(ids).encode()).hexdigest()[:16]
        write_parquet_atomic(table, Path(self.embeddings_dir) / f"{key}.parquet",
                             {b"svdcli.clip_model": self.weights.label.encode()})


def check_head_width(head_path: Path, model: str, label: str) -> None:
    """Refuse, before any work, an aesthetic head whose input width is not the model's embedding width."""
    import open_clip

    from svdcli.curate.scorers.aesthetic import head_dim, load_aesthetic

    dim = open_clip.get_model_config(register_model_config(model))["embed_dim"]
    want = head_dim(load_aesthetic(head_path))
    if want != dim:
        raise SvdError(f"aesthetic head {head_path.name} expects {want}-d embeddings but {label} gives "
                       f"{dim}-d (use ViT-L-14 with the ViT-L/14 heads, or a matching head)")


def embeddings_table(clip_ids: list[str], times: list[list[float]], emb: np.ndarray):
    """Long table: one row per (clip_id, frame) with an L2-normalised float32 embedding."""
    import pyarrow as pa

    c, f, d = emb.shape
    flat = pa.array(np.ascontiguousarray(emb, np.float32).reshape(-1))  # (C, F, D) -> (C*F*D,)
    return pa.table({
        "clip_id": pa.array([cid for cid in clip_ids for _ in range(f)], pa.string()),
        "frame": pa.array([FRAME_NAMES[k] for _ in clip_ids for k in range(f)], pa.string()),
        "time": pa.array([t for ts in times for t in ts], pa.float64()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
    })


def embeddings_path(out_path: Path) -> Path:
    """Where the side file of a manifest goes: `clips.parquet` -> `clips.clip_embeddings.parquet`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".parquet") + ".clip_embeddings.parquet")


def merge_embeddings(folder: Path, target: Path, label: str) -> Path:
    """Merge the per-task files into one side file (one row per clip and frame, by clip_id and
    time) and remove them."""
    import pyarrow as pa

    from svdcli.manifest.io import read_parquet, write_parquet_atomic

    files = sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    tables = [read_parquet(p) for p in files]
    table = pa.concat_tables(tables) if tables else embeddings_table([], [], np.zeros((0, 3, 1), np.float32))
    # a regrouped rerun can cover a clip twice: keep the newest row per (clip, frame)
    keys = [f"{c}|{f}" for c, f in zip(table.column("clip_id").to_pylist(), table.column("frame").to_pylist())]
    last = {k: i for i, k in enumerate(keys)}
    if len(last) != len(keys):
        table = table.take(sorted(last.values()))
    # the tasks finish in any order: rows by clip and time, so a rerun writes the same file
    table = table.sort_by([("clip_id", "ascending"), ("time", "ascending")])
    write_parquet_atomic(table, target, {b"svdcli.clip_model": label.encode()})
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass
    return target


def read_captions(manifest_path: Path) -> dict[str, str]:
    """clip_id -> caption for the clips that have one (empty when the manifest has no captions)."""
    import pyarrow.parquet as pq

    from svdcli.manifest.io import read_manifest

    if "caption" not in pq.read_schema(manifest_path).names:
        return {}
    table = read_manifest(manifest_path, columns=["clip_id", "caption"])
    return {c: t for c, t in zip(table.column("clip_id").to_pylist(), table.column("caption").to_pylist()) if t}


def run_clip(manifest_path, out_path=None, *, workers: int = 1, progress=None, rank: int = 0,
             world_size: int = 1, executor=None, **settings):
    """Embed, score aesthetics and CLIP score every ok clip; settings are ClipConfig fields.

    Returns run_clip_stage's (RunResult, written path or None); the embeddings side file is
    written next to the output when the run is complete.
    """
    manifest_path = Path(manifest_path)
    out = Path(out_path or manifest_path)
    check_inputs(ClipEmbedStage, manifest_path, out)  # before the captions are read and folders made
    stage = ClipEmbedStage(config_from(ClipConfig, settings, "clip"), read_captions(manifest_path))
    folder = parts_folder(out, stage)
    stage.embeddings_dir = folder.with_name(folder.name + ".embeddings")  # made by the first write
    result, written = run_clip_stage(stage, manifest_path, out, workers=workers, progress=progress,
                                     rank=rank, world_size=world_size, executor=executor, clips_per_task=32,
                                     describe=f"clip ({stage.weights.label})")
    if written is not None:
        merge_embeddings(stage.embeddings_dir, embeddings_path(written), stage.weights.label)
    return result, written


def summarize(path: Path) -> str:
    """One line for the CLI: clips embedded, mean scores, errors and the side file."""
    from svdcli.manifest.io import read_manifest

    t = read_manifest(path, columns=["aesthetic_score", "clip_score", "clip_error"]).to_pydict()
    aes = [a for a in t["aesthetic_score"] if a is not None]
    cos = [c for c in t["clip_score"] if c is not None]
    errors = sum(e is not None for e in t["clip_error"])
    mean = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "-"  # noqa: E731
    return (f"clip: {len(aes) or len(cos)} clips; mean aesthetic_score {mean(aes)}; clip_score for {len(cos)} "
            f"captioned clips (mean {mean(cos)}); {errors} errors -> {path}, embeddings in "
            f"{embeddings_path(path).name}")


SPEC = StageSpec(
    name="clip",
    columns=COLUMNS,
    config=ClipConfig,
    runner=run_clip,
    summary=summarize,
    after=(("caption", "clip_score compares frames with the caption"),),
    histograms=(("aesthetic_score", "aesthetic score"), ("clip_score", "CLIP text-image similarity")),
    scores=("aesthetic_score", "clip_score"),
)
