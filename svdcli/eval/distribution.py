"""`svd eval distribution`: the curation scores of generated videos against the training manifest's.

Each generated video is scored as one clip by the curation stages' own scorers: motion and
camera motion (svdcli.eval.motion.measure_motion, the motion stage), text area (the text
stage's detector and `text_area` on its first/middle/last frames at its analysis size) and,
when a LAION head and its CLIP model are given, the clip stage's aesthetic score (the head on
the first/middle/last frames' embeddings, averaged). The manifest's kept clips give the
training distribution. For every score: both medians, the Wasserstein-1 distance (in the
score's units) and the Kolmogorov-Smirnov statistic; for camera_motion the label shares and
their total-variation distance. The HTML report overlays the two histograms per score, like
`svd curate report`, offline.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError
from svdcli.eval.videos import list_videos, read_or_skip

NUMERIC = ("motion_score", "text_area", "aesthetic_score")


@dataclass
class DistributionRequest:
    fake: Path
    manifest: Path
    out: Path                         # report folder (index.html, plots/, result.json)
    fps: float | None = None          # for arrays / frame folders, which carry none
    text_detector: str | None = "auto"   # None: no text scores
    aesthetic: str | None = None      # a LAION head (file or name); None: no aesthetic scores
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"
    device: str | None = None
    skip_bad: bool = False


def training_scores(manifest: Path) -> dict[str, list]:
    """The kept clips' scores (every ok clip when no filter ran), per column present."""
    from svdcli.manifest.io import read_manifest

    rows = read_manifest(manifest).to_pylist()
    kept = [r for r in rows if (r["keep"] if r.get("keep") is not None else r.get("status", "ok") == "ok")]
    if not kept:
        raise SvdError(f"{manifest}: no kept clips to compare with")
    out = {c: [r[c] for r in kept if r.get(c) is not None] for c in (*NUMERIC, "camera_motion")}
    return {c: v for c, v in out.items() if v}


class Scorers:
    """The curation scorers a run uses, loaded once."""

    def __init__(self, req: DistributionRequest):
        from svdcli.eval.features import pick_device

        self.device = str(pick_device(req.device))
        self.text = self.clip = self.head = None
        if req.text_detector:
            from svdcli.curate.stages.text import make_detector, resolve_detector

            self.text_name = resolve_detector(req.text_detector)
            self.text = make_detector(self.text_name, device=self.device, batch_size=1)
        if req.aesthetic:
            from svdcli.curate.scorers.aesthetic import load_aesthetic
            from svdcli.curate.scorers.open_clip_models import ClipEmbedder
            from svdcli.weights import aesthetic_weights, open_clip_weights

            self.head = load_aesthetic(aesthetic_weights(req.aesthetic))
            self.clip = ClipEmbedder.load(open_clip_weights(req.clip_model, req.clip_pretrained), req.clip_model,
                                          self.device)

    def score(self, video: np.ndarray, fps: float) -> dict:
        from svdcli.curate.frames import frame_times
        from svdcli.eval.motion import measure_motion

        row = measure_motion(video, fps)
        fml = [min(len(video) - 1, int(np.floor(t * fps + 1e-6)))
               for t in frame_times({"start_time": 0.0, "end_time": len(video) / fps, "fps": fps}, "fml")]
        if self.text is not None:
            row["text_area"] = self._text_area(video[fml])
        if self.head is not None:
            from svdcli.curate.scorers.aesthetic import aesthetic
            from svdcli.eval.clipsim import frames_for_clip

            emb = self.clip.embed_images(frames_for_clip(video[fml], self.clip.side, None))
            row["aesthetic_score"] = float(aesthetic(emb, self.head).mean())
        return row

    def _text_area(self, frames: np.ndarray) -> float:
        import cv2

        from svdcli.curate.stages.text import TextConfig, text_area
        from svdcli.video.seek import analysis_size

        w, h = analysis_size(frames.shape[2], frames.shape[1], TextConfig().size, upscale=False)
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
        return max(text_area(b, frames.shape[1:3]) for b in self.text.detect(frames))


def compare(generated: dict[str, list], train: dict[str, list]) -> dict:
    from svdcli.eval.stats import ks_statistic, wasserstein1

    out = {}
    for col in NUMERIC:
        if col in generated and col in train:
            g, t = generated[col], train[col]
            out[col] = {"generated_videos": len(g), "training_clips": len(t), "median_generated": float(np.median(g)),
                        "median_training": float(np.median(t)), "wasserstein1": wasserstein1(g, t),
                        "ks": ks_statistic(g, t)}
    if "camera_motion" in generated and "camera_motion" in train:
        labels = sorted(set(generated["camera_motion"]) | set(train["camera_motion"]))
        share = {name: {lab: float(np.mean([v == lab for v in values])) for lab in labels}
                 for name, values in (("generated", generated["camera_motion"]), ("training", train["camera_motion"]))}
        out["camera_motion"] = {**share, "total_variation": 0.5 * sum(abs(share["generated"][lab] - share["training"][lab])
                                                                      for lab in labels)}
    return out


def run_distribution(req: DistributionRequest, progress=None, log=print) -> dict:
    from svdcli.eval.protocol import write_result

    train = training_scores(req.manifest)
    refs = list_videos(req.fake)
    scorers = Scorers(req)
    generated: dict[str, list] = {}
    skipped = 0
    for k, ref in enumerate(refs):
        read = read_or_skip(ref, req.skip_bad)
        if read is None:
            skipped += 1
            continue
        video, fps = read[0], read[1] or req.fps
        if not fps:
            raise SvdError(f"{ref.name}: the video carries no frame rate; pass --fps (SVD: fps_id + 1)")
        for col, value in scorers.score(video, fps).items():
            generated.setdefault(col, []).append(value)
        if progress:
            progress("scoring", k + 1, len(refs))
    result = {"metric": "curation_distribution", "generated": str(req.fake), "manifest": str(req.manifest),
              "videos": len(refs) - skipped, "skipped_unreadable": skipped,
              "scorers": {"motion": "svdcli.curate.stages.motion", "text": getattr(scorers, "text_name", None),
                          "aesthetic": req.aesthetic and f"{req.aesthetic} on {req.clip_model}:{req.clip_pretrained}"},
              "scores": compare(generated, train)}
    req.out.mkdir(parents=True, exist_ok=True)
    write_report(req.out, generated, train, result)
    return write_result(req.out / "result.json", result)


def write_report(folder: Path, generated: dict, train: dict, result: dict) -> Path:
    """index.html with one overlaid histogram per score and the distances, readable offline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "plots").mkdir(exist_ok=True)
    rows, images = [], []
    for col, stats in result["scores"].items():
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        if col == "camera_motion":
            labels = list(stats["generated"])
            x = np.arange(len(labels))
            ax.bar(x - 0.2, [stats["training"][lab] for lab in labels], 0.4, label="training", color="#4c72b0")
            ax.bar(x + 0.2, [stats["generated"][lab] for lab in labels], 0.4, label="generated", color="#dd8452")
            ax.set_xticks(x, labels, rotation=30, fontsize=8)
            rows.append(f"<tr><td>{col}</td><td colspan=4>total variation {stats['total_variation']:.3f}</td></tr>")
        else:
            bins = np.histogram_bin_edges(np.concatenate([train[col], generated[col]]), bins=30)
            ax.hist(train[col], bins=bins, density=True, alpha=0.6, label="training", color="#4c72b0")
            ax.hist(generated[col], bins=bins, density=True, alpha=0.6, label="generated", color="#dd8452")
            rows.append(f"<tr><td>{col}</td><td>{stats['median_training']:.4g}</td><td>{stats['median_generated']:.4g}"
                        f"</td><td>{stats['wasserstein1']:.4g}</td><td>{stats['ks']:.3f}</td></tr>")
        ax.set_title(col, fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "plots" / f"{col}.png")
        plt.close(fig)
        images.append(f'<img src="plots/{html.escape(col)}.png" alt="{html.escape(col)}">')
    page = ("<!doctype html><meta charset=utf-8><title>generated vs training</title>"
            f"<h1>Curation scores: {html.escape(result['generated'])} vs {html.escape(result['manifest'])}</h1>"
            f"<p>{result['videos']} generated videos; scorers: {html.escape(str(result['scorers']))}</p>"
            "<table border=1 cellpadding=4><tr><th>score</th><th>median training</th><th>median generated</th>"
            "<th>Wasserstein-1</th><th>KS</th></tr>" + "".join(rows) + "</table>" + "".join(images))
    (folder / "index.html").write_text(page)
    return folder / "index.html"
