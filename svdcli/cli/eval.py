"""`svd eval ...`: measure what a model generates (parse and dispatch; the work is in svdcli.eval)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from svdcli.cli.common import console, user_errors

app = typer.Typer(
    help="Measure what a trained model generates: FVD, per-frame FID, CLIPSIM, motion conditioning "
         "against the motion stage's own scores, the curation scores of generated videos against the "
         "training manifest, the zero-shot UCF-101 protocol, and SVD-MV's multi-view metrics. Every result is a JSON file that records "
         "its protocol (network and sha256, frames, resize, seeds, sample counts); docs/eval.md.",
    no_args_is_help=True)

SRC_HELP = ("a folder of videos (mp4/avi/webm/gif..., .npy arrays (T,H,W,3) uint8, or folders of png frames; "
            "searched recursively), a shard folder of `svd pack`, or a curated manifest (.parquet)")
OUT_HELP = "Result JSON to write (the value and its whole protocol)."
WEIGHTS_DIR_HELP = "Folder of converted network files (default: SVD_WEIGHTS_DIR or ~/.cache/svdcli/weights)."


@contextmanager
def bars():
    """A rich progress bar per named phase; yields progress(label, done, total)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console(), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


def show(result: dict, line: str) -> None:
    con = console()
    con.print(line)
    if result.get("written"):
        con.print(f"wrote {result['written']}")


FVD_HELP = ("Fréchet Video Distance between --real and --fake on I3D Kinetics-400 features (Unterthiner et al. "
            "2018). Defaults are StyleGAN-V's fvd2048_16f: 2048 clips of 16 frames per side, a seeded random "
            "window of each real video, the first 16 frames of each generated one. Needs the converted I3D "
            "file (`svd eval convert`).")


@app.command("fvd", help=FVD_HELP, no_args_is_help=True)
@user_errors
def fvd(
    real: Path = typer.Option(..., "--real", help=f"Real videos: {SRC_HELP}."),
    fake: Path = typer.Option(..., "--fake", help=f"Generated videos: {SRC_HELP}. Lossless (.npy, png) keeps compression out of the number."),
    protocol: str = typer.Option("styleganv", "--protocol", help="styleganv (StyleGAN-V's fvd2048_16f: 224x224 stretch, [-1,1], cov/N) or videogpt (short side 224 + centre crop, [-0.5,0.5], cov/(N-1))."),
    samples: int = typer.Option(2048, "--samples", min=0, help="Clips per side (the protocol's 2048; fewer warns; 0 = every usable video)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Frames per clip (default 16)."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Take every n-th frame (default 1)."),
    real_sampling: Optional[str] = typer.Option(None, "--real-sampling", help="Which window of each real video: random (default: a seeded random offset per video, StyleGAN-V), start, or center."),
    fake_sampling: str = typer.Option("start", "--fake-sampling", help="Window of each generated video: start (default), random or center."),
    seed: int = typer.Option(0, "--seed", help="Seed of which videos are drawn and of the random windows."),
    i3d: Optional[Path] = typer.Option(None, "--i3d", help="Converted I3D file (`svd eval convert`); default: the protocol's in the weights folder."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help=WEIGHTS_DIR_HELP),
    real_stats: Optional[Path] = typer.Option(None, "--real-stats", help="Cache of the real side's statistics (.npz): written once, reused while the protocol, network, source, samples and seed match."),
    batch: int = typer.Option(8, "--batch", min=1, help="Clips per network call."),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads reading videos."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda when available)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable videos out (counted in the result) instead of stopping."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    from svdcli.errors import SvdError
    from svdcli.eval.fvd import FVDRequest, run_fvd
    from svdcli.eval.networks import find_weights
    from svdcli.eval.protocol import fvd_protocol
    from svdcli.eval.videos import SAMPLINGS

    for flag, value in (("--real-sampling", real_sampling), ("--fake-sampling", fake_sampling)):
        if value is not None and value not in SAMPLINGS:
            raise SvdError(f"{flag} {value!r}: choose one of {', '.join(SAMPLINGS)}")
    proto = fvd_protocol(protocol, frames=frames, stride=stride, real_sampling=real_sampling)
    path = find_weights(proto.network, i3d, weights_dir)
    req = FVDRequest(real, fake, proto, path, samples, seed, fake_sampling, batch, workers, device, skip_bad,
                     real_stats, out)
    with (bars() if progress else _no_bar()) as bar:
        result = run_fvd(req, bar, log=lambda m: console().print(m))
    show({**result, "written": out}, f"FVD {result['value']:.2f} ({proto.name}, {result['real']['measured']} real / "
                                     f"{result['fake']['measured']} fake clips of {proto.frames} frames)")


@contextmanager
def _no_bar():
    yield None


CONVERT_HELP = (
    "Convert a published feature network (I3D for FVD, Inception for FID) once into a safetensors file, "
    "which `svd eval` then loads without running code from any file. State dicts (.pt/.pth) are read as "
    "plain tensors (torch weights_only). A TorchScript file (StyleGAN-V's i3d_torchscript.pt) is a "
    "program: reading it runs its code, so it is read only with --trusted, for a file you trust. The "
    "output records the source file's sha256; every result records both.")


@app.command("convert", help=CONVERT_HELP, no_args_is_help=True)
@user_errors
def convert(
    src: Path = typer.Argument(..., metavar="SRC", help="The published file: i3d_torchscript.pt (StyleGAN-V), i3d_pretrained_400.pt (VideoGPT) or pt_inception-2015-12-05-6726825d.pth (pytorch-fid)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .safetensors file to write."),
    trusted: bool = typer.Option(False, "--trusted", help="Allow reading a TorchScript file. TorchScript is a program: loading it RUNS CODE from the file. Pass this only for a file you trust (downloaded from its published URL)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out."),
) -> None:
    from svdcli.errors import SvdError
    from svdcli.eval.networks import convert as run

    if out.suffix != ".safetensors":
        raise SvdError(f"--out {out}: write a .safetensors file")
    if out.exists() and not force:
        raise SvdError(f"{out} exists; pass --force to overwrite it")
    info = run(src, out, trusted)
    console().print(f"wrote {out}: {info['network']} ({info['tensors']} tensors), sha256 {info['sha256']}; "
                    f"source {info['source']} sha256 {info['source_sha256']}")


MOTION_HELP = (
    "Sample an image-to-video checkpoint at several --motion-bucket and --fps-id values (every image with "
    "its own seed, the same for each value) and measure each video with the curation motion stage itself "
    "(svd curate motion: Farneback pairs, median, camera-motion fit), in memory before any compression. "
    "Reports Spearman's rho between the requested bucket and the measured motion score, the median score "
    "per (fps_id, bucket), and with --lora the share of videos whose camera_motion label is the LoRA's, "
    "beside the base model's share on the same images and seeds.")


@app.command("motion", help=MOTION_HELP, no_args_is_help=True)
@user_errors
def motion(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="An image-to-video checkpoint (official SVD file, diffusers folder, ours, or a run folder)."),
    images: Path = typer.Option(..., "--images", "-i", help="A conditioning image, or a folder of them."),
    motion_bucket: list[int] = typer.Option([0, 64, 127, 191, 255], "--motion-bucket", help="motion_bucket_id values to sample (repeatable)."),
    fps_id: list[int] = typer.Option([6], "--fps-id", help="fps_id values to sample (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Image i samples with seed + i."),
    frames: Optional[int] = typer.Option(None, "--frames", min=2, help="Frames per video (default: the model's)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the model's)."),
    width: Optional[int] = typer.Option(None, "--width", help="Width (default: the model's)."),
    height: Optional[int] = typer.Option(None, "--height", help="Height (default: the model's)."),
    lora: Optional[Path] = typer.Option(None, "--lora", help="A camera-motion LoRA file: also sample with it and count the videos whose camera_motion is its label."),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="Strength of --lora."),
    lora_label: Optional[str] = typer.Option(None, "--lora-label", help="The camera_motion label the LoRA was trained for (pan_left, zoom_in, ...; default: the file's camera_motion metadata)."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="Keep every sample here as .npy (T, H, W, 3) uint8."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda when available)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from svdcli.errors import SvdError
    from svdcli.eval.motion import MotionRequest, run_motion_eval

    for value in motion_bucket:
        if not 0 <= value <= 255:
            raise SvdError(f"--motion-bucket {value}: must be 0..255")
    req = MotionRequest(checkpoint, images, tuple(motion_bucket), tuple(fps_id), seed, frames, steps, width, height,
                        lora, lora_scale, lora_label, device, dtype, videos, out)
    with (bars() if progress else _no_bar()) as bar:
        result = run_motion_eval(req, bar, log=lambda m: console().print(m))
    rho = result["spearman_motion_bucket"]
    line = (f"motion: {result['videos']} videos; Spearman rho(motion bucket, motion score) = "
            f"{'n/a' if rho is None else f'{rho:.3f}'}; medians " +
            ", ".join(f"fps {c['fps_id']}/bucket {c['motion_bucket_id']}: {c['median_motion_score']:.3g}" for c in result["cells"]))
    if "lora" in result:
        lo = result["lora"]
        line += f"; LoRA {lo['label']}: {lo['match_fraction']:.0%} of videos (base model {lo['base_match_fraction']:.0%})"
    show({**result, "written": out}, line)


FID_HELP = ("Per-frame FID between the frames of --real and --fake (Heusel et al. 2017): random frames of each "
            "video in a seeded order, clean-fid's resize to 299 (PIL bicubic in float), the FID Inception-v3's "
            "pool3 features. Defaults follow Video LDM: 10,000 frames per side. Needs the converted Inception "
            "file (`svd eval convert pt_inception-2015-12-05-6726825d.pth ...`).")


@app.command("fid", help=FID_HELP, no_args_is_help=True)
@user_errors
def fid(
    real: Path = typer.Option(..., "--real", help=f"Real videos: {SRC_HELP}."),
    fake: Path = typer.Option(..., "--fake", help=f"Generated videos: {SRC_HELP}."),
    samples: int = typer.Option(10_000, "--samples", min=2, help="Frames per side (Video LDM: 10,000; fewer warns)."),
    frames_per_video: Optional[int] = typer.Option(None, "--frames-per-video", min=1, help="At most this many frames of one video (default: as few as reach --samples)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the video order and of the frames drawn."),
    inception: Optional[Path] = typer.Option(None, "--inception", help="Converted FID Inception file; default: inception_fid.safetensors in the weights folder."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help=WEIGHTS_DIR_HELP),
    batch: int = typer.Option(32, "--batch", min=1, help="Frames per network call."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda when available)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable videos out (counted) instead of stopping."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    from svdcli.eval.fid import FIDRequest, run_fid
    from svdcli.eval.networks import find_weights

    req = FIDRequest(real, fake, find_weights("inception-fid", inception, weights_dir), samples, frames_per_video,
                     seed, batch, device, skip_bad, out)
    with (bars() if progress else _no_bar()) as bar:
        result = run_fid(req, bar, log=lambda m: console().print(m))
    show({**result, "written": out}, f"FID {result['value']:.2f} ({result['real']['measured']} real / "
                                     f"{result['fake']['measured']} fake frames)")


CLIPSIM_HELP = ("CLIPSIM: the mean over videos of the mean per-frame cosine between CLIP image and prompt "
                "embeddings (GODIVA; Video LDM and Make-A-Video report it with ViT-B/32, the default). Prompts: "
                "--prompts FILE (JSON {video file name or stem: prompt}), else a .txt beside each video, a shard "
                "sample's caption or a manifest's caption column. The backbone is named in the output.")


@app.command("clipsim", help=CLIPSIM_HELP, no_args_is_help=True)
@user_errors
def clipsim(
    videos: Path = typer.Option(..., "--videos", help=f"Generated videos: {SRC_HELP}."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSON {video file name or stem: prompt}."),
    model: str = typer.Option("ViT-B-32", "--model", help="open_clip model name (or a model-config .json)."),
    pretrained: str = typer.Option("openai", "--pretrained", help="open_clip tag or a checkpoint file."),
    frames_per_video: Optional[int] = typer.Option(None, "--frames-per-video", min=1, help="Frames per video, evenly spread (default: every frame)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda when available)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable videos out (counted) instead of stopping."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from svdcli.eval.clipsim import ClipsimRequest, run_clipsim

    req = ClipsimRequest(videos, model, pretrained, prompts, frames_per_video, device, skip_bad, out)
    with (bars() if progress else _no_bar()) as bar:
        result = run_clipsim(req, bar, log=lambda m: console().print(m))
    show({**result, "written": out}, f"CLIPSIM {result['value']:.4f} ({result['backbone']}, "
                                     f"{result['videos']['measured']} videos)")


DISTRIBUTION_HELP = (
    "Score generated videos with the curation scorers themselves (motion and camera motion; text area with "
    "the text stage's detector; the clip stage's aesthetic score when --aesthetic names a LAION head) and "
    "compare each score's distribution with the training manifest's kept clips: medians, Wasserstein-1, "
    "Kolmogorov-Smirnov, camera-motion label shares. Writes OUT/index.html (overlaid histograms, offline, "
    "like `svd curate report`) and OUT/result.json.")


@app.command("distribution", help=DISTRIBUTION_HELP, no_args_is_help=True)
@user_errors
def distribution(
    fake: Path = typer.Option(..., "--fake", help=f"Generated videos: {SRC_HELP}."),
    manifest: Path = typer.Option(..., "--manifest", "-m", help="The curated training manifest (.parquet)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (index.html, plots/, result.json)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, help="Frame rate of arrays / png folders, which carry none (SVD: fps_id + 1)."),
    text: str = typer.Option("auto", "--text", help="Text detector: auto, craft, dbnet, or none (no text scores)."),
    aesthetic: Optional[str] = typer.Option(None, "--aesthetic", help="LAION aesthetic head (laion-mlp, a file...) for aesthetic scores; default: none."),
    clip_model: str = typer.Option("ViT-L-14", "--clip-model", help="open_clip model of the aesthetic head."),
    clip_pretrained: str = typer.Option("openai", "--clip-pretrained", help="open_clip tag or checkpoint file."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda when available)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave unreadable videos out (counted) instead of stopping."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from svdcli.eval.distribution import DistributionRequest, run_distribution

    req = DistributionRequest(fake, manifest, out, fps, None if text == "none" else text, aesthetic, clip_model,
                              clip_pretrained, device, skip_bad)
    with (bars() if progress else _no_bar()) as bar:
        result = run_distribution(req, bar, log=lambda m: console().print(m))
    parts = [f"{col}: W1 {s['wasserstein1']:.3g}, KS {s['ks']:.2f}" for col, s in result["scores"].items() if "ks" in s]
    if "camera_motion" in result["scores"]:
        parts.append(f"camera_motion: TV {result['scores']['camera_motion']['total_variation']:.2f}")
    show({**result, "written": out / "index.html"}, f"{result['videos']} generated videos vs {manifest.name}: " + "; ".join(parts))


UCF_HELP = (
    "Zero-shot UCF-101 FVD as SVD, Video LDM, PYoCo and Make-A-Video report it (docs/eval.md): 10,000 generated "
    "videos with classes in the training split's proportions, one prompt per class (the class name in words, "
    "or --prompts, e.g. PYoCo's), real statistics from 10,000 training videos' central 16 frames at 25 fps, "
    "I3D Kinetics-400 under the styleganv FVD protocol. An image-to-video checkpoint takes --condition "
    "first-frame (the first frame of a real video of the class). Generated frames reach I3D from memory.")


@app.command("ucf101", help=UCF_HELP, no_args_is_help=True)
@user_errors
def ucf101(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="The model (any `svd sample` checkpoint)."),
    data: Path = typer.Option(..., "--data", help="The UCF-101 folder (v_<Class>_gNN_cNN.avi files, in class folders or not)."),
    split: Optional[Path] = typer.Option(None, "--split", help="trainlist01.txt: the training split (real videos and class shares); default: every video."),
    samples: int = typer.Option(10_000, "--samples", min=1, help="Generated videos (Make-A-Video / Video LDM: 10,000)."),
    real_samples: int = typer.Option(10_000, "--real-samples", min=2, help="Real videos for the statistics (VideoPoet: 10,000)."),
    classes: str = typer.Option("train", "--classes", help="train (the split's class proportions) or uniform."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSON {ClassName: prompt}; default: the class name in words through --template."),
    template: str = typer.Option("{}", "--template", help="Prompt template around the class words, e.g. 'a person {}'."),
    condition: str = typer.Option("prompt", "--condition", help="prompt (text-to-video) or first-frame (image-to-video)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=9, help="Frames per clip (default 16)."),
    real_sampling: Optional[str] = typer.Option("center", "--real-sampling", help="Window of each real video: center (VideoPoet), random (StyleGAN-V) or start."),
    seed: int = typer.Option(0, "--seed", help="Video k samples with seed + k; also the real draw."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the model's)."),
    width: Optional[int] = typer.Option(None, "--width", help="Sampling width (default: the model's)."),
    height: Optional[int] = typer.Option(None, "--height", help="Sampling height (default: the model's)."),
    i3d: Optional[Path] = typer.Option(None, "--i3d", help="Converted I3D file; default: i3d_styleganv.safetensors in the weights folder."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help=WEIGHTS_DIR_HELP),
    real_stats: Optional[Path] = typer.Option(None, "--real-stats", help="Cache of the real statistics (.npz), reused while the protocol matches."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="Keep the generated videos here as .npy."),
    batch: int = typer.Option(8, "--batch", min=1, help="Clips per I3D call."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda when available)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    from svdcli.errors import SvdError
    from svdcli.eval.networks import find_weights
    from svdcli.eval.protocol import fvd_protocol
    from svdcli.eval.ucf101 import UCFRequest, run_ucf101
    from svdcli.eval.videos import SAMPLINGS

    if real_sampling not in SAMPLINGS:
        raise SvdError(f"--real-sampling {real_sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    proto = fvd_protocol("styleganv", frames=frames, real_sampling=real_sampling)
    req = UCFRequest(checkpoint, data, proto, find_weights(proto.network, i3d, weights_dir), samples, real_samples,
                     split, classes, prompts, template, condition, seed, steps, width, height, batch, device, videos,
                     real_stats, out)
    with (bars() if progress else _no_bar()) as bar:
        result = run_ucf101(req, bar, log=lambda m: console().print(m))
    show({**result, "written": out}, f"zero-shot UCF-101 FVD {result['value']:.2f} ({result['fake']['measured']} "
                                     f"generated / {result['real']['measured']} real clips)")

MULTIVIEW_HELP = (
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


@app.command("multiview", help=MULTIVIEW_HELP, no_args_is_help=True)
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
