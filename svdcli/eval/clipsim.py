"""`svd eval clipsim`: CLIPSIM (Wu et al. 2021, GODIVA), the mean over videos of the mean over
frames of the cosine between a frame's CLIP image embedding and the video's prompt embedding.

Prompts come from, in order: `--prompts FILE` (JSON {video file name or stem: prompt}), a `.txt`
beside each video (`clip_0001.mp4` + `clip_0001.txt`), a shard sample's `txt`, a manifest's
`caption`. The CLIP model is the clip stage's (open_clip, `--model` / `--pretrained`); Video LDM
and Make-A-Video report CLIPSIM with ViT-B/32, the default here, and the result names the
backbone. Frames are resized (area) to the model's short side and centre-cropped, as the clip
stage reads them; every frame counts unless --frames-per-video spreads fewer evenly.
"""
from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError
from svdcli.eval.videos import VideoRef, list_videos, read_or_skip


@dataclass
class ClipsimRequest:
    videos: Path
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    prompts: Path | None = None
    frames_per_video: int | None = None
    device: str | None = None
    skip_bad: bool = False
    out: Path | None = None


def prompt_for(ref: VideoRef, table: dict[str, str]) -> str | None:
    path = Path(ref.path)
    for key in (f"{path.name}:{ref.key}" if ref.key else path.name, path.stem, ref.key):
        if key and key in table:
            return table[key]
    if ref.kind == "shard":
        with tarfile.open(ref.path) as archive:
            try:
                return archive.extractfile(f"{ref.key}.txt").read().decode()
            except KeyError:
                return None
    sidecar = path.with_suffix(".txt") if ref.kind != "frames" else path / "prompt.txt"
    return sidecar.read_text().strip() if sidecar.is_file() else None


def manifest_prompts(src: Path) -> dict[str, str]:
    """`caption` of a manifest's clips, keyed as list_videos names them."""
    from svdcli.manifest.io import read_manifest

    if src.suffix != ".parquet":
        return {}
    rows = read_manifest(src).to_pylist()
    return {Path(r["video_path"]).name + f"@{r['start_time']:.3f}": r.get("caption") for r in rows if r.get("caption")}


def frames_for_clip(video: np.ndarray, side: int, count: int | None) -> np.ndarray:
    """Evenly spread frames, resized so the short side is `side` (area), as the clip stage reads."""
    import cv2

    from svdcli.curate.scorers.open_clip_models import clip_read_size

    if count and count < len(video):
        video = video[np.linspace(0, len(video) - 1, count).round().astype(int)]
    w, h = clip_read_size(video.shape[2], video.shape[1], side)
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in video])


def run_clipsim(req: ClipsimRequest, progress=None, log=print) -> dict:
    from svdcli.curate.scorers.open_clip_models import ClipEmbedder, clip_scores
    from svdcli.eval.features import pick_device
    from svdcli.eval.protocol import write_result
    from svdcli.weights import open_clip_weights

    refs = list_videos(req.videos)
    table = json.loads(Path(req.prompts).read_text()) if req.prompts else manifest_prompts(Path(req.videos))
    prompts = [prompt_for(r, table) for r in refs]
    missing = [r.name for r, p in zip(refs, prompts) if not p]
    if missing:
        raise SvdError(f"{missing[0]}: no prompt ({len(missing)} of {len(refs)} videos have none); give --prompts "
                       "FILE (JSON {file name: prompt}) or a .txt beside each video")
    weights = open_clip_weights(req.model, req.pretrained)
    device = str(pick_device(req.device))
    embedder = ClipEmbedder.load(weights, req.model, device)
    scores, skipped = [], 0
    for k, (ref, prompt) in enumerate(zip(refs, prompts)):
        read = read_or_skip(ref, req.skip_bad)
        if read is None:
            skipped += 1
            continue
        video = read[0]
        image = embedder.embed_images(frames_for_clip(video, embedder.side, req.frames_per_video))
        text = embedder.embed_texts([prompt])
        scores.append((ref.name, float(clip_scores(image[None], text)[0])))
        if progress:
            progress("clipsim", k + 1, len(refs))
    if not scores:
        raise SvdError(f"{req.videos}: no video could be read")
    result = {"metric": "clipsim", "value": float(np.mean([s for _, s in scores])), "backbone": weights.label,
              "protocol": {"score": "mean over videos of the mean over frames of cos(image, prompt)",
                           "frames_per_video": req.frames_per_video or "all",
                           "resize": "short side to the model's input (area), centre crop"},
              "videos": {"source": str(req.videos), "measured": len(scores), "skipped_unreadable": skipped},
              "per_video": [{"video": name, "clipsim": s} for name, s in scores]}
    return write_result(req.out, result)
