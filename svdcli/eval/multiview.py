"""Multi-view metrics (SVD paper sec. 4.5): PSNR, LPIPS and CLIP-S between "the corresponding
pairs of ground truth and generated frames" of each object's orbit.

    pairs = find_pairs("samples/", "renders/")             # object folders matched by name
    report = evaluate(pairs, MetricModels.load())          # per view, per object, overall means

An orbit folder holds its views as images, directly or in views/ (what `svd render orbits` and
`svd sample --multiview` write); a folder of orbit folders is matched with another by object
name. Views pair up in name order. View 0 is the input view, which a multi-view model is given:
it is left out unless asked for.

- PSNR: 10 log10(1 / MSE) over RGB in [0, 1] (MSE floored at 1e-10: identical views score 100 dB).
- LPIPS: Zhang et al. 2018, VGG variant (svdcli.models.perceptual: heads from the lpips wheel,
  torchvision's VGG16 file as the backbone); images in [-1, 1]; lower is better.
- CLIP-S: cosine similarity of the two views' CLIP image embeddings (open_clip; the paper does
  not name its CLIP, the default here is the curation stage's ViT-L-14 / openai).
Views with transparency are composited on white; a generated view of another size than its
ground truth is resized to it (bicubic) and the report says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MSE_FLOOR = 1e-10
LPIPS_HINT = ("--lpips-backbone", "`--lpips-backbone random` runs without it, but is no perceptual metric")


@dataclass(frozen=True)
class ViewPair:
    object: str
    view: int
    generated: Path
    truth: Path


def orbit_images(folder: Path) -> list[Path] | None:
    """The views of an orbit folder (directly or in views/), in name order; None if it is not one."""
    for where in (folder, folder / "views"):
        if where.is_dir():
            images = sorted(p for p in where.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                return images
    return None


def find_pairs(views: str | Path, truth: str | Path, include_input: bool = False) -> list[ViewPair]:
    """Every (generated, ground truth) view pair; mismatched objects or view counts are errors."""
    views, truth = Path(views), Path(truth)
    for flag, folder in (("--views", views), ("--truth", truth)):
        if not folder.is_dir():
            raise SvdError(f"{flag} {folder}: not a folder")
    gen_orbit, truth_orbit = orbit_images(views), orbit_images(truth)
    if gen_orbit is not None and truth_orbit is not None:
        orbits = {"": (gen_orbit, truth_orbit)}
    else:
        gen = {p.name: orbit_images(p) for p in sorted(views.iterdir()) if p.is_dir()}
        ref = {p.name: orbit_images(p) for p in sorted(truth.iterdir()) if p.is_dir()}
        gen = {k: v for k, v in gen.items() if v}
        ref = {k: v for k, v in ref.items() if v}
        missing = sorted(set(gen) ^ set(ref))
        if not gen or missing:
            detail = f"objects in only one of them: {', '.join(missing[:5])}" if missing else "no views found"
            raise SvdError(f"--views {views} and --truth {truth} do not hold the same orbits ({detail}); each is "
                           "an orbit folder (images, or views/ with images) or a folder of them")
        orbits = {k: (gen[k], ref[k]) for k in gen}
    pairs = []
    for name, (gen_images, ref_images) in orbits.items():
        if len(gen_images) != len(ref_images):
            raise SvdError(f"object {name or views.name}: {len(gen_images)} generated views but "
                           f"{len(ref_images)} ground-truth views")
        first = 0 if include_input else 1
        pairs += [ViewPair(name, k, g, t) for k, (g, t) in enumerate(zip(gen_images, ref_images)) if k >= first]
    if not pairs:
        raise SvdError("no views to compare besides the input view (pass --include-input-view to score it)")
    return pairs


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8; transparency composited on white; resized (bicubic) to `size` (W, H) if given."""
    from PIL import Image

    image = Image.open(path)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.BICUBIC)
    return np.asarray(image)


def psnr(generated: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB of two uint8 images, on [0, 1]."""
    diff = generated.astype(np.float64) / 255.0 - truth.astype(np.float64) / 255.0
    return 10.0 * math.log10(1.0 / max(float(np.mean(diff * diff)), MSE_FLOOR))


@dataclass
class MetricModels:
    """The networks of LPIPS and CLIP-S, loaded once."""

    lpips: object
    clip: object
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, lpips_backbone: str = "", clip_model: str = "ViT-L-14", clip_weights: str = "openai",
             device: str = "cpu") -> "MetricModels":
        from svdcli.models.perceptual import lpips_vgg

        notes = []
        net = lpips_vgg(lpips_backbone, hint=LPIPS_HINT).to(device)
        if lpips_backbone == "random":
            notes.append("LPIPS with a random VGG16 backbone: a test mode, not a perceptual metric")
        clip = _clip_embedder(clip_model, clip_weights, device)
        if clip_weights == "random":
            notes.append("CLIP-S with random CLIP weights: a test mode, not a similarity metric")
        return cls(net, clip, notes)


def _clip_embedder(model: str, weights: str, device: str):
    from svdcli.curate.scorers.open_clip_models import ClipEmbedder
    from svdcli.weights import open_clip_weights, register_model_config

    if weights != "random":
        return ClipEmbedder.load(open_clip_weights(model, weights), model, device)
    import open_clip

    name = register_model_config(model)
    return ClipEmbedder(open_clip.create_model(name, pretrained=None, device=device).eval(),
                        open_clip.get_tokenizer(name), device)


def _clip_input(frames: np.ndarray, side: int) -> np.ndarray:
    """Square views at the CLIP input size (bicubic), for ClipEmbedder (short side = its input side)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((side, side), Image.BICUBIC)) for f in frames])


def score_pairs(pairs: list[ViewPair], models: MetricModels, device: str = "cpu") -> tuple[list[dict], list[str]]:
    """One row per pair: object, view, psnr, lpips, clip_s; and notes (resized views)."""
    import torch

    from svdcli.models.perceptual import perceptual_distance

    rows, notes = [], []
    truth = [read_rgb(p.truth) for p in pairs]
    generated = []
    for p, t in zip(pairs, truth):
        g = read_rgb(p.generated, size=(t.shape[1], t.shape[0]))
        if read_rgb(p.generated).shape != t.shape and not notes:
            notes.append(f"generated views resized to the ground truth's {t.shape[1]}x{t.shape[0]}")
        generated.append(g)
    side = models.clip.side
    gen_emb = models.clip.embed_images(_clip_input(np.stack(generated), side))
    ref_emb = models.clip.embed_images(_clip_input(np.stack(truth), side))
    clip_s = (gen_emb * ref_emb).sum(-1).tolist()
    for p, g, t, c in zip(pairs, generated, truth, clip_s):
        with torch.no_grad():
            x = torch.from_numpy(g.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
            y = torch.from_numpy(t.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
            d = float(perceptual_distance(models.lpips, x, y)[0])
        rows.append({"object": p.object, "view": p.view, "psnr": psnr(g, t), "lpips": d, "clip_s": float(c),
                     "generated": str(p.generated), "truth": str(p.truth)})
    return rows, notes


def summarise(rows: list[dict]) -> dict:
    """Means per object and over all views (every view weighs the same, as the paper averages frames)."""
    keys = ("psnr", "lpips", "clip_s")
    objects: dict[str, list[dict]] = {}
    for r in rows:
        objects.setdefault(r["object"], []).append(r)
    mean = lambda rs: {k: float(np.mean([r[k] for r in rs])) for k in keys}  # noqa: E731
    return {"mean": {**mean(rows), "views": len(rows), "objects": len(objects)},
            "objects": {name: {**mean(rs), "views": len(rs)} for name, rs in objects.items()}}


def evaluate(pairs: list[ViewPair], models: MetricModels, device: str = "cpu") -> dict:
    """Per-view rows, per-object and overall means, and notes."""
    rows, notes = score_pairs(pairs, models, device)
    return {**summarise(rows), "views": rows, "notes": models.notes + notes}
