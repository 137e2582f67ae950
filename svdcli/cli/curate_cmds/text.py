"""`svd curate text`: share of the frame covered by text, per clip (its help text; the command is built from the stage's declaration)."""
from __future__ import annotations

HELP = """Score how much of every ok clip is covered by text (captions, titles, watermarks, slides).

text_area = max over the sampled frames of (area of the union of detected text boxes / frame area), 0..1; by default the first, middle and last frame are sampled (--frames 1fps samples at a fixed rate). The paper drops clips above 0.07 (`svd curate filter`); this command only scores, --max-area only sets the count in the summary.

Detectors: `craft` (easyocr's CRAFT, the paper's; needs craft_mlt_25k.pth in --model-dir, $SVD_EASYOCR_DIR or ~/.EasyOCR/model) or `dbnet` (PP-OCRv4 DBNet whose weights ship inside rapidocr-onnxruntime: works offline). `auto` uses CRAFT when its weights are present, else DBNet; the manifest records which one ran in `text_detector`.

Resumes after an interruption; a clip that cannot be read gets a `text_error` instead of stopping the run."""


def before(settings: dict) -> str:
    """The detector `auto` picks (a missing CRAFT file stops the command here)."""
    from svdcli.curate.stages.text import resolve_detector

    return f"text detector: {resolve_detector(settings['detector'], settings['model_dir'])}"
