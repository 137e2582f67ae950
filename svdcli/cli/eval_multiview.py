"""`svd eval multiview`: generated orbit views against ground-truth renders (parse and dispatch only)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from svdcli.cli.common import console, user_errors

app = typer.Typer(help="Evaluate generated videos and views.", no_args_is_help=True)

HELP = (
    "Score generated views of objects against ground-truth renders with the SVD paper's multi-view "
    "metrics (sec. 4.5): PSNR (dB, higher is better), LPIPS (VGG, lower is better) and CLIP-S "
    "(cosine similarity of CLIP image embeddings, higher is better), per view and as means per object "
    "and overall.\n\n"
    "--views and --truth are each an orbit folder (images, or views/ with images, as `svd sample "
    "--multiview` and `svd render orbits` write them) or a folder of orbit folders matched by name. "
    "Views pair up in name order; view 0, the input view, is left out unless --include-input-view.\n\n"
    "Weights: LPIPS' heads ship in the lpips wheel, its VGG16 backbone is torchvision's "
    "vgg16-397923af.pth (torch's cache, or --lpips-backbone); CLIP from open_clip (--clip-model, "
    "--clip-weights: a tag, found in the Hugging Face cache or downloaded when online, or a file). "
    "'random' for either runs with random weights: a check of the plumbing, not a metric.")


@app.command("multiview", help=HELP, no_args_is_help=True)
@user_errors
def multiview(
    views: Path = typer.Option(..., "--views", help="Generated views: an orbit folder or a folder of them."),
    truth: Path = typer.Option(..., "--truth", help="Ground-truth renders, laid out as --views."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write every score (per view, per object, "
                                       "overall) to this JSON file."),
    include_input: bool = typer.Option(False, "--include-input-view", help="Also score view 0, the input view."),
    lpips_backbone: str = typer.Option("", "--lpips-backbone", help="torchvision's VGG16 file for LPIPS (default: "
                                       "torch's cache), or 'random'."),
    clip_model: str = typer.Option("ViT-L-14", "--clip-model", help="open_clip architecture for CLIP-S."),
    clip_weights: str = typer.Option("openai", "--clip-weights", help="open_clip tag or checkpoint file for "
                                     "CLIP-S, or 'random'."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    from svdcli.eval.multiview import MetricModels, evaluate, find_pairs

    pairs = find_pairs(views, truth, include_input)
    models = MetricModels.load(lpips_backbone, clip_model, clip_weights, device)
    report = evaluate(pairs, models, device)
    con = console()
    for note in report["notes"]:
        con.print(f"note: {note}")
    for name, m in report["objects"].items():
        con.print(f"{name or views.name}: PSNR {m['psnr']:.2f}  LPIPS {m['lpips']:.4f}  CLIP-S {m['clip_s']:.4f} "
                  f"({m['views']} views)")
    m = report["mean"]
    con.print(f"mean over {m['views']} views of {m['objects']} objects: PSNR {m['psnr']:.2f}  "
              f"LPIPS {m['lpips']:.4f}  CLIP-S {m['clip_s']:.4f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        con.print(f"wrote {out}")
