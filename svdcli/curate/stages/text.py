"""Text stage: how much of a clip's frames is covered by detected text (SVD paper: drop > 7%).

`text_area` of a clip is the MAXIMUM over its sampled frames of (area of the union of the
detected text boxes / frame area). The union is filled on a raster mask at the analysis
resolution, so overlapping boxes count once; the maximum makes a caption or title that is on
screen for only part of the clip count fully.

Detectors (both `detect(frames) -> list of polygons per frame`):
- `craft`: the CRAFT detector that easyocr ships (the paper's choice); needs `craft_mlt_25k.pth`.
- `dbnet`: PP-OCRv4 DBNet, whose onnx weights ship inside the rapidocr-onnxruntime wheel, so it
  works on a fresh offline machine. Frames of one size run as one onnx batch (on GPU; see
  TextConfig.batch_size for CPU).
`auto` picks CRAFT when its weights are present, otherwise DBNet; `text_detector` records which.

Which frames are read, and how, is `svdcli/curate/frames.py` (shared with clip and caption).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from svdcli.curate.frames import parse_frames
from svdcli.curate.per_clip import run_clip_stage
from svdcli.curate.settings import DEVICE_HELP, setting
from svdcli.curate.stage import ClipStage, Frames, Resources, StageSpec, config_from, gpus_for
from svdcli.errors import SvdError
from svdcli.manifest.schema import Column
from svdcli.weights import check_device, craft_weights, dbnet_weights, find_craft, pick_device

DETECTORS = ("auto", "craft", "dbnet")


# --- pure scoring -------------------------------------------------------------------------------
def text_area(boxes: list[np.ndarray], frame_shape: tuple[int, int]) -> float:
    """Area of the union of text polygons (each (K, 2) x,y pixels) over the frame area, 0..1."""
    import cv2

    h, w = frame_shape[:2]
    if not len(boxes):
        return 0.0
    mask = np.zeros((h, w), np.uint8)
    for b in boxes:  # one call per polygon: a single fillPoly call fills overlaps even-odd (as holes)
        cv2.fillPoly(mask, [np.round(np.asarray(b, np.float64).reshape(-1, 2)).astype(np.int32)], 1)
    return float(mask.mean())


# --- detectors ------------------------------------------------------------------------------------
class DBNetDetector:
    """PP-OCRv4 DBNet through onnxruntime; frames of one size run in batches of `batch_size`."""

    name = "dbnet"

    def __init__(self, device: str = "cpu", threads: int = 0, batch_size: int = 16):
        import onnxruntime as ort
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(dbnet_weights()), opts, providers=providers)
        # PaddleOCR's reference DB post-processing (rapidocr's config dilates and unclips more,
        # which inflates the area of small text by a third)
        self.post = DBPostProcess(thresh=0.3, box_thresh=0.6, max_candidates=1000, unclip_ratio=1.5,
                                  use_dilation=False, score_mode="fast")
        self.batch_size = batch_size

    def detect(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        """Text polygons for each RGB uint8 frame of (N, H, W, 3)."""
        import cv2

        n, h, w = frames.shape[:3]
        # the network needs sides that are multiples of 32
        h32, w32 = max(32, round(h / 32) * 32), max(32, round(w / 32) * 32)
        out: list[list[np.ndarray]] = []
        for i in range(0, n, self.batch_size):
            chunk = frames[i:i + self.batch_size]
            if (h32, w32) != (h, w):
                chunk = np.stack([cv2.resize(f, (w32, h32)) for f in chunk])
            x = (chunk.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
            pred = self.session.run(None, {self.session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
            for p in pred:  # (1, H, W) probability map per frame
                boxes, _ = self.post(p[None], (h, w))
                out.append([b.astype(np.float32) for b in boxes])
        return out


class CraftDetector:
    """easyocr's CRAFT, detector only (no recogniser is loaded); frames run as one torch batch."""

    name = "craft"

    def __init__(self, weights: Path, device: str = "cpu", batch_size: int = 16):
        self.device = device
        self.net = load_craft(weights, device)
        self.batch_size = batch_size

    def detect(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        """Text polygons for each RGB uint8 frame of (N, H, W, 3)."""
        from easyocr.detection import get_textbox

        out: list[list[np.ndarray]] = []
        canvas = max(frames.shape[1:3])  # keep the analysis size: no magnification
        for i in range(0, len(frames), self.batch_size):
            polys = get_textbox(self.net, frames[i:i + self.batch_size], canvas_size=canvas, mag_ratio=1.0,
                                text_threshold=0.7, link_threshold=0.4, low_text=0.4, poly=False,
                                device=self.device)
            out.extend([[np.asarray(p, np.float32).reshape(-1, 2) for p in frame_polys] for frame_polys in polys])
        return out


def load_craft(weights: Path, device: str = "cpu"):
    """easyocr's CRAFT with its weights read as tensors only (`weights_only=True`).

    easyocr's own `get_detector` unpickles the file with `weights_only=False`, which runs any
    code a tampered file holds; this builds the same network from tensors alone.
    """
    import pickle

    import torch
    from easyocr.craft import CRAFT

    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SvdError(f"{weights}: not a CRAFT state dict of plain tensors ({first}); "
                       "download craft_mlt_25k.pth again") from None
    if not isinstance(state, dict):
        raise SvdError(f"{weights}: holds a {type(state).__name__}, not a CRAFT state dict")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    with torch.device("meta"):  # no random init of 20M weights that the file replaces
        net = CRAFT()
    try:
        net.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        raise SvdError(f"{weights}: not the weights of easyocr's CRAFT ({str(exc).splitlines()[0]})") from None
    # easyocr also applies int8 dynamic quantization on CPU, a no-op here: CRAFT has no Linear layer
    return net.to(device).eval()


def resolve_detector(detector: str, model_dir: str | None = None) -> str:
    """'auto' -> 'craft' when its weights are present, else 'dbnet'; explicit names pass through."""
    if detector not in DETECTORS:
        raise SvdError(f"--detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    if detector == "auto":
        return "craft" if find_craft(model_dir) else "dbnet"
    if detector == "craft":
        craft_weights(model_dir)  # fail now, in the parent, with the message saying where to put it
    return detector


def make_detector(name: str, model_dir: str | None = None, device: str = "cpu", batch_size: int = 16):
    if name == "craft":
        return CraftDetector(craft_weights(model_dir), device, batch_size)
    return DBNetDetector(device, batch_size=batch_size)


# --- stage ----------------------------------------------------------------------------------------
@dataclass
class TextConfig:
    detector: str = setting("auto", "auto | craft | dbnet.")
    model_dir: str | None = setting(None, "Folder with craft_mlt_25k.pth (else $SVD_EASYOCR_DIR, ~/.EasyOCR/model).",
                                    path=True)
    frames: str = setting("fml", "'fml' = first, middle, last frame; or a rate such as '1fps'.")
    size: int = setting(640, "Long side of the analysis frames, pixels.", ge=64)
    # 0 = auto: batching gains nothing on CPU (docs/benchmarks.md)
    batch_size: int = setting(0, "Frames per detector batch; 0 = 16 on GPU, 1 on CPU (where batching is not "
                                 "faster).", ge=0)
    device: str = setting("auto", DEVICE_HELP)


@dataclass
class TextSummary:
    """What only the summary line of `svd curate text` reads."""

    max_area: float = setting(0.07, "Only for the summary: count clips above it.", ge=0.0, le=1.0)


COLUMNS = (
    Column("text_area", pa.float32(), "text", "max over sampled frames (default first, middle, last) of (area of "
           "the union of detected text boxes / frame area), 0..1"),
    Column("text_detector", pa.string(), "text", "detector that produced text_area (craft or dbnet)"),
    Column("text_error", pa.string(), "text", "error message when text could not be scored"),
)


class TextStage(ClipStage):
    name = "text"
    columns = ("clip_id", *(c.name for c in COLUMNS))
    loaded = ("detector",)

    def __init__(self, config: TextConfig):
        parse_frames(config.frames)
        check_device(config.device)
        self.config = config
        self.detector_name = resolve_detector(config.detector, config.model_dir)
        self.detector = None

    def settings(self) -> dict:
        s = asdict(self.config)
        s.update(detector=self.detector_name, device=None, batch_size=None, model_dir=None)
        return s  # device, batch size and folder do not change the result

    def resources(self) -> Resources:
        return Resources(gpus=gpus_for(self.config.device), loads_model=True)

    def setup(self) -> None:
        device = pick_device(self.config.device)
        batch = self.config.batch_size or (16 if device.startswith("cuda") else 1)
        self.detector = make_detector(self.detector_name, self.config.model_dir, device, batch)

    def frames_needed(self) -> Frames:
        return Frames(self.config.frames, self.config.size)

    def score(self, frames: np.ndarray) -> dict:
        boxes = self.detector.detect(frames)
        return {"text_area": max(text_area(b, frames.shape[1:3]) for b in boxes), "text_detector": self.detector_name}


def run_text(manifest_path, out_path=None, *, workers: int = 1, progress=None, rank: int = 0,
             world_size: int = 1, executor=None, **settings):
    """Score text area for every ok clip; settings are TextConfig fields. Returns run_clip_stage's result."""
    stage = TextStage(config_from(TextConfig, settings, "text"))
    return run_clip_stage(stage, Path(manifest_path), out_path, workers=workers, progress=progress,
                          rank=rank, world_size=world_size, executor=executor, clips_per_task=16,
                          describe=f"text ({stage.detector_name})")


def check_settings(settings: dict) -> None:
    """The checks a recipe runs on the text settings before any stage starts."""
    config = TextConfig(**settings)
    parse_frames(config.frames)
    if config.detector not in DETECTORS:
        raise SvdError(f"detector must be one of {', '.join(DETECTORS)}, not {config.detector!r}")


def find_weights(settings: dict) -> None:
    """Missing CRAFT weights stop a recipe before cuts and motion run, not after."""
    resolve_detector(settings.get("detector", "auto"), settings.get("model_dir"))


def summarize(path: Path, max_area: float) -> str:
    """One line for the CLI: clips scored, detector, how many exceed `max_area`, errors."""
    from svdcli.manifest.io import read_manifest

    t = read_manifest(path, columns=["text_area", "text_detector", "text_error"]).to_pydict()
    areas = [a for a in t["text_area"] if a is not None]
    errors = sum(e is not None for e in t["text_error"])
    detectors = sorted({d for d in t["text_detector"] if d})
    over = sum(a > max_area for a in areas)
    return (f"text: {len(areas)} clips scored with {', '.join(detectors) or '-'}; {over} have text_area > "
            f"{max_area:g}; {errors} errors -> {path}")


SPEC = StageSpec(
    name="text",
    columns=COLUMNS,
    config=TextConfig,
    runner=run_text,
    summary=summarize,
    summary_options=TextSummary,
    check=check_settings,
    preflight=find_weights,
    histograms=(("text_area", "text area (fraction of the frame)"),),
    scores=("text_area",),
)
