"""`svd curate report`: a static HTML page with PNG plots and thumbnails, readable offline.

The page (`OUT/index.html`, relative links to `OUT/plots/*.png` and `OUT/thumbs/*.jpg`) shows:
counts of kept and dropped clips per reason, histograms of clip length and every score column
present that a stage declares (motion, text area, aesthetic, CLIP, caption words) with the
filter's thresholds drawn (absolute ones and the cut-offs the percentile rules resolved to),
the length distributions of the captions each captioner wrote (CoCa, video model, LLM summary;
words per caption, one curve each), and a contact sheet of middle-frame thumbnails, with their
captions, of kept clips and of dropped clips grouped by reason. Nothing is loaded from the net.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from svdcli.curate import stages as registry
from svdcli.errors import SvdError
from svdcli.manifest.schema import CLIP_LOCATION

THUMB_WIDTH = 160


def histograms() -> list[tuple[str, str]]:
    """(column, axis label) of every histogram: clip length, then each stage's scores."""
    return [("length", "clip length (s)"), *registry.histograms()]


def thresholds(history: list[dict]) -> dict[str, list[tuple[str, float]]]:
    """Column -> [(rule text, value)] from the last filter record of a manifest's history."""
    records = [h for h in history if h.get("stage") == "filter"]
    if not records:
        return {}
    out: dict[str, list[tuple[str, float]]] = {}
    for rule, value in (records[-1].get("cutoffs") or {}).items():
        column = re.match(r"\s*(\w+)", rule).group(1)
        out.setdefault(column, []).append((rule, float(value)))
    return out


def plot_histogram(values: np.ndarray, label: str, lines: list[tuple[str, float]], path: Path) -> None:
    """One histogram with a vertical line (and legend entry) per threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.hist(values, bins=min(50, max(10, len(values) // 5)), color="#4c72b0", alpha=0.85)
    for (rule, value), color in zip(lines, ["#c44e52", "#dd8452", "#55a868", "#8172b3"]):
        ax.axvline(value, color=color, linewidth=2, label=f"{rule}  ({value:.3g})")
    if lines:
        ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("clips")
    ax.set_title(f"{label}: n={len(values)}, median {np.median(values):.3g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reasons(counts: dict[str, int], path: Path) -> None:
    """Horizontal bars: clips kept and dropped per reason."""
    import matplotlib.pyplot as plt

    names = list(counts)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.35 * len(names)), dpi=100)
    colors = ["#55a868" if n == "kept" else "#c44e52" for n in names]
    ax.barh(names, [counts[n] for n in names], color=colors)
    for i, n in enumerate(names):
        ax.text(counts[n], i, f" {counts[n]}", va="center", fontsize=8)
    ax.set_xlabel("clips")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def group_names(table) -> np.ndarray:
    """Per row: 'kept', its drop reason, 'not filtered' (no filter run yet) or 'error'."""
    n = table.num_rows
    column = lambda name: table.column(name).to_pylist() if name in table.column_names else [None] * n  # noqa: E731
    status, keep, reason = column("status"), column("keep"), column("drop_reason")
    names = [("not filtered" if st in (None, "ok") else "error") if k is None else ("kept" if k else (r or "dropped"))
             for st, k, r in zip(status, keep, reason)]
    return np.asarray(names, dtype=object)


def write_thumbnails(picked: list[dict], folder: Path) -> dict[str, str]:
    """Middle-frame JPEGs of `picked` clips, one decode pass per video; clip_id -> file name."""
    import cv2

    from svdcli.video.seek import read_frames_at

    folder.mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list[dict]] = {}
    for row in picked:
        by_video.setdefault(row["video_path"], []).append(row)
    names = {}
    for video, clips in by_video.items():
        clips.sort(key=lambda c: c["start_time"])
        times = [(c["start_time"] + c["end_time"]) / 2 for c in clips]
        w, h = clips[0]["width"], clips[0]["height"]
        size = (THUMB_WIDTH, max(2, int(round(THUMB_WIDTH * h / w / 2)) * 2))
        try:
            frames = read_frames_at(video, times, size=size, fmt="bgr24")  # (N, h, w, 3)
        except Exception:  # noqa: BLE001 - a missing thumbnail must not stop the report
            continue
        for clip, frame in zip(clips, frames):
            name = re.sub(r"[^\w.-]", "_", clip["clip_id"]) + ".jpg"
            cv2.imwrite(str(folder / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            names[clip["clip_id"]] = name
    return names


def pick_thumbnails(table, names: np.ndarray, per_group: int, total: int) -> dict[str, list[dict]]:
    """Up to `per_group` clips per group, evenly spread over each group, at most `total` in all."""
    has_time = np.array([t is not None for t in table.column("start_time").to_pylist()], bool)
    picked, left = {}, total
    for name in group_counts(names):
        rows = np.flatnonzero((names == name) & has_time)
        n = min(per_group, len(rows), left)
        take = rows[np.linspace(0, len(rows) - 1, n).round().astype(int)] if n else []
        picked[name] = table.take(list(take)).to_pylist() if n else []
        left -= n
    return picked


def group_counts(names: np.ndarray) -> dict[str, int]:
    """Rows per group, 'kept' first, then by size."""
    values, counts = np.unique(names.astype(str), return_counts=True)
    return dict(sorted(zip(values.tolist(), counts.tolist()), key=lambda kv: (kv[0] != "kept", -kv[1])))


NEEDED_COLUMNS = list(CLIP_LOCATION)  # the thumbnails are read by time
CAPTIONS = {"caption_coca": "CoCa (middle frame)", "caption_video": "video model", "caption_summary": "LLM summary"}
REPORT_COLUMNS = NEEDED_COLUMNS + ["status", "keep", "drop_reason", "motion_score"]


def caption_lengths(manifest: Path, present: set[str]) -> dict[str, np.ndarray]:
    """Words per caption of each captioner's column present (rows with status ok and a caption);
    one column read at a time, counted by Arrow, so a corpus' captions are never all in memory."""
    import pyarrow.compute as pc

    from svdcli.manifest.io import has_status, read_parquet

    out = {}
    for column, label in CAPTIONS.items():
        if column not in present:
            continue
        table = read_parquet(manifest, columns=[column] + (["status"] if "status" in present else []))
        if "status" in present:
            table = table.filter(has_status(table, "ok"))
        text = table.column(column).drop_null()
        if len(text):
            out[label] = pc.list_value_length(pc.utf8_split_whitespace(text)).to_numpy().astype(np.int64)
    return out


def captions_of(manifest: Path, clip_ids: list[str]) -> dict[str, str]:
    """clip_id -> `caption` for a few clips (the contact sheet's), read row group by row group."""
    import pyarrow.parquet as pq

    if not clip_ids or "caption" not in pq.read_schema(manifest).names:
        return {}
    table = pq.read_table(manifest, columns=["clip_id", "caption"], filters=[("clip_id", "in", clip_ids)])
    return {c: t for c, t in zip(table.column("clip_id").to_pylist(), table.column("caption").to_pylist()) if t}


def plot_caption_lengths(lengths: dict[str, np.ndarray], path: Path) -> None:
    """One step histogram per captioner, on shared bins, with its median in the legend."""
    import matplotlib.pyplot as plt

    top = max(int(v.max()) for v in lengths.values())
    bins = np.arange(0, top + 2) - 0.5 if top <= 60 else 40
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for (label, words), color in zip(lengths.items(), ["#4c72b0", "#dd8452", "#55a868"]):
        ax.hist(words, bins=bins, histtype="step", linewidth=2, color=color,
                label=f"{label}: n={len(words)}, median {np.median(words):g}")
    ax.legend(fontsize=8)
    ax.set_xlabel("caption length (words)")
    ax.set_ylabel("clips")
    ax.set_title("caption length by captioner", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class ReportError(SvdError):
    """A manifest the report cannot be drawn from; the message names the file and what is missing."""


def write_report(manifest: Path, out: Path, per_group: int = 12, max_thumbs: int = 96) -> Path:
    """Write OUT/index.html with its plots and thumbnails; returns the page's path."""
    import matplotlib
    import pyarrow.parquet as pq

    matplotlib.use("Agg")  # files only, no display needed
    from svdcli.manifest.io import manifest_history, read_manifest

    read_manifest(manifest, columns=[])  # a missing or foreign file: the manifest reader's one-line errors
    present = set(pq.read_schema(manifest).names)
    missing = [c for c in NEEDED_COLUMNS if c not in present]
    if missing:
        raise ReportError(f"{manifest} has no column(s) {', '.join(missing)}: a report needs the clip "
                          "columns `svd curate cuts` writes")
    wanted = [c for c in REPORT_COLUMNS + [c for c, _ in histograms()] if c in present]
    table = read_manifest(manifest, columns=list(dict.fromkeys(wanted)))  # only what the page shows
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file; the report needs a folder (for index.html, plots/, thumbs/)")
    (out / "plots").mkdir(parents=True, exist_ok=True)
    lines = thresholds(manifest_history(manifest))
    plots = []
    for column, label in histograms():
        values = _column_values(table, column)
        if len(values):
            plot_histogram(values, label, lines.get(column, []), out / "plots" / f"{column}.png")
            plots.append((label, f"plots/{column}.png"))
    lengths = caption_lengths(manifest, present)
    if lengths:
        plot_caption_lengths(lengths, out / "plots" / "caption_lengths.png")
        plots.append(("caption length by captioner (words)", "plots/caption_lengths.png"))
    names = group_names(table)
    counts = group_counts(names)
    plot_reasons(counts, out / "plots" / "reasons.png")
    picked = pick_thumbnails(table, names, per_group, max_thumbs)
    rows = [r for members in picked.values() for r in members]
    thumbs = write_thumbnails(rows, out / "thumbs")
    captions = captions_of(manifest, [r["clip_id"] for r in rows])
    page = out / "index.html"
    page.write_text(render_html(Path(manifest), counts, plots, picked, thumbs, captions))
    return page


def _column_values(table, column: str) -> np.ndarray:
    """Non-null values of `column` ('length' = end - start) over rows with status ok."""
    import pyarrow.compute as pc

    from svdcli.manifest.io import has_status

    if "status" in table.column_names:
        table = table.filter(has_status(table, "ok"))
    if column == "length":
        if "end_time" not in table.column_names:
            return np.zeros(0)
        values = pc.subtract(table.column("end_time"), table.column("start_time"))
    elif column in table.column_names:
        values = table.column(column)
    else:
        return np.zeros(0)
    return values.drop_null().to_numpy().astype(np.float64)


def render_html(manifest: Path, counts: dict[str, int], plots: list[tuple[str, str]],
                picked: dict[str, list[dict]], thumbs: dict[str, str], captions: dict[str, str] | None = None) -> str:
    """The page: summary table, reason chart, histograms, contact sheets (relative links only)."""
    esc = html.escape
    total = sum(counts.values())
    table = "".join(f"<tr><td>{esc(n)}</td><td>{c}</td><td>{100 * c / max(total, 1):.1f}%</td></tr>"
                    for n, c in counts.items())
    figures = "".join(f'<figure><img src="{src}" alt="{esc(label)}"><figcaption>{esc(label)}</figcaption></figure>'
                      for label, src in plots)
    sheets = []
    for name, rows in picked.items():
        cells = []
        for r in rows:
            img = (f'<img src="thumbs/{thumbs[r["clip_id"]]}" alt="">' if r["clip_id"] in thumbs
                   else '<div class="missing">unreadable</div>')
            score = f' · motion {r["motion_score"]:.2f}' if r.get("motion_score") is not None else ""
            length = r["end_time"] - r["start_time"]
            text = (captions or {}).get(r["clip_id"], "")
            shown = text[:117] + "..." if len(text) > 120 else text
            caption = f'<div class="caption" title="{esc(text)}">{esc(shown)}</div>' if text else ""
            cells.append(f'<div class="cell">{img}<div>{esc(r["clip_id"])}</div>'
                         f'<div>{length:.1f} s{score}</div>{caption}</div>')
        sheets.append(f"<h3>{esc(name)} ({counts[name]} clips, {len(rows)} shown)</h3>"
                      f'<div class="sheet">{"".join(cells)}</div>')
    return _PAGE.format(title=esc(manifest.name), manifest=esc(str(manifest)), total=total, table=table,
                        figures=figures, sheets="".join(sheets))


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>curation report: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 12px; border-bottom: 1px solid #ddd; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }} figcaption {{ font-size: 0.8em; color: #555; }}
.sheet {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.cell {{ width: {w}px; font-size: 0.7em; overflow-wrap: anywhere; }}
.caption {{ color: #555; font-style: italic; }}
.missing {{ width: {w}px; height: 90px; background: #eee; text-align: center; line-height: 90px; }}
</style></head><body>
<h1>Curation report</h1>
<p>{manifest}: {total} rows</p>
<h2>Kept and dropped</h2>
<table><tr><th>group</th><th>clips</th><th>share</th></tr>{table}</table>
<p><img src="plots/reasons.png" alt="clips per reason"></p>
<h2>Distributions</h2>
<p>Vertical lines: the filter's thresholds (percentile rules at the value they resolved to).</p>
{figures}
<h2>Contact sheet (middle frames)</h2>
{sheets}
</body></html>
""".replace("{w}", str(THUMB_WIDTH))
