"""Procedural videos with known structure: textured pans, cuts, dissolves, fades, static shots, text.

Used by the tests (known boundaries and motion) and by `make demo` (a small corpus). A video is a
list of `Shot`s joined by transitions; `write_video` renders it to H.264 with PyAV and returns the
ground truth (boundary frames and times).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svdcli.video.write import write_frames


@dataclass
class Shot:
    """`frames` frames of a texture seen through a moving window.

    `speed` is the pan in pixels per frame (at the output size), `zoom` the relative change of
    scale per frame (0.02 = 2% closer each frame), `seed` picks the texture and `tint` its
    colour (default: from `seed`; two shots with one `tint` share a palette, not a picture),
    `text` draws a caption box covering about `text_area` of the frame.
    """

    frames: int
    seed: int = 0
    speed: tuple[float, float] = (0.0, 0.0)
    text: str | None = None
    text_area: float = 0.0
    brightness: float = 1.0
    zoom: float = 0.0
    tint: int | None = None


@dataclass
class Transition:
    """How a shot ends into the next: 'cut', 'dissolve' or 'fade' (through black)."""

    kind: str = "cut"
    frames: int = 0


@dataclass
class Truth:
    fps: float
    num_frames: int
    cuts: list[int] = field(default_factory=list)  # first frame of each new shot (hard cuts)
    transitions: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, first, end)

    @property
    def boundaries(self) -> list[int]:
        """Frame where each shot change happens (cut frame or middle of a gradual transition)."""
        mids = [(a + b) // 2 for _, a, b in self.transitions]
        return sorted(self.cuts + mids)


def texture(seed: int, height: int, width: int, tint: int | None = None) -> np.ndarray:
    """A smooth multi-scale random RGB texture (uint8), rich enough for optical flow."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for scale, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
        small = rng.random((max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        img += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    colour = rng.random(3).astype(np.float32) * 0.6 + 0.4
    if tint is not None:
        colour = np.random.default_rng(tint).random(3).astype(np.float32) * 0.6 + 0.4
    img = (img - img.min()) / (img.max() - img.min() + 1e-6) * colour
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_shot(shot: Shot, height: int, width: int) -> np.ndarray:
    """(frames, H, W, 3) uint8 frames of one shot."""
    import cv2

    sx, sy = shot.speed
    pad_x = int(abs(sx) * shot.frames) + 8
    pad_y = int(abs(sy) * shot.frames) + 8
    tex = texture(shot.seed, height + pad_y, width + pad_x, shot.tint).astype(np.float32)
    out = np.empty((shot.frames, height, width, 3), np.uint8)
    x0 = 4 if sx >= 0 else pad_x - 4
    y0 = 4 if sy >= 0 else pad_y - 4
    for i in range(shot.frames):
        # sub-pixel window shift with an affine warp, so slow pans move smoothly
        m = np.float32([[1, 0, -(x0 + sx * i)], [0, 1, -(y0 + sy * i)]])
        if shot.zoom:  # scale about the window's centre
            z = (1 + shot.zoom) ** i
            cx, cy = x0 + sx * i + width / 2, y0 + sy * i + height / 2
            m = np.float32([[z, 0, width / 2 - z * cx], [0, z, height / 2 - z * cy]])
        frame = cv2.warpAffine(tex, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame *= shot.brightness
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
        if shot.text:
            draw_text_box(out[i], shot.text, shot.text_area)
    return out


def draw_text_box(frame: np.ndarray, text: str, area: float) -> tuple[int, int, int, int]:
    """Draw `text` lines in a white box covering about `area` of the frame; returns the box."""
    import cv2

    h, w = frame.shape[:2]
    box_w = int(w * min(0.9, max(0.2, np.sqrt(area) * 1.6)))
    box_h = max(12, int(area * h * w / max(box_w, 1)))
    x, y = (w - box_w) // 2, h - box_h - h // 12
    lines = max(1, box_h // 28)
    scale = max(0.4, min(2.5, (box_h / lines) / 30))
    thickness = max(1, int(scale * 2))
    for k in range(lines):
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y + int((k + 0.75) * box_h / lines)
        cv2.putText(frame, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness + 2, cv2.LINE_AA)
        cv2.putText(frame, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (10, 10, 10), thickness, cv2.LINE_AA)
    return x, y, box_w, box_h


def compose(shots: list[Shot], transitions: list[Transition], height: int, width: int,
            fps: float) -> tuple[np.ndarray, Truth]:
    """Join shots with transitions; gradual transitions overlap the end/start of adjacent shots."""
    if len(transitions) != len(shots) - 1:
        raise ValueError("need one transition between each pair of shots")
    frames = render_shot(shots[0], height, width)
    truth = Truth(fps=fps, num_frames=0)
    for shot, tr in zip(shots[1:], transitions):
        nxt = render_shot(shot, height, width)
        n = len(frames)
        if tr.kind == "cut" or tr.frames <= 0:
            truth.cuts.append(n)
            frames = np.concatenate([frames, nxt])
        elif tr.kind == "dissolve":
            k = tr.frames
            w = np.linspace(0, 1, k + 2)[1:-1, None, None, None].astype(np.float32)
            mixed = (frames[-k:] * (1 - w) + nxt[:k] * w).astype(np.uint8)
            truth.transitions.append(("dissolve", n - k, n))
            frames = np.concatenate([frames[:-k], mixed, nxt[k:]])
        elif tr.kind == "fade":
            k = tr.frames  # k frames fading out, then k frames fading in
            down = np.linspace(1, 0, k + 1)[1:, None, None, None].astype(np.float32)
            out_part = (frames[-k:] * down).astype(np.uint8)
            in_part = (nxt[:k] * down[::-1]).astype(np.uint8)
            truth.transitions.append(("fade", n - k, n + k))
            frames = np.concatenate([frames[:-k], out_part, in_part, nxt[k:]])
        else:
            raise ValueError(f"unknown transition {tr.kind!r}")
    truth.num_frames = len(frames)
    return frames, truth


def write_video(path: str | Path, shots: list[Shot], transitions: list[Transition] | None = None,
                size: tuple[int, int] = (160, 96), fps: float = 24.0, **kw) -> Truth:
    """Render and encode a video; `size` is (width, height). Returns its ground truth."""
    transitions = transitions if transitions is not None else [Transition("cut")] * (len(shots) - 1)
    frames, truth = compose(shots, transitions, size[1], size[0], fps)
    write_frames(path, frames, fps, **kw)
    return truth


def write_cut_suite(folder: str | Path, fps: float = 24.0, size: tuple[int, int] = (160, 96)) -> dict[str, Truth]:
    """The synthetic cut-detection cases, one video each: {file name: truth}.

    same_palette: 1 s dissolves and a fade between panning shots of ONE palette (colour
    statistics alike, content different); close_cuts: cuts 0.3-1.0 s apart; flash: one
    over-exposed frame in a pan (not a shot change); fast_pan, zoom, static: no cut at all.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s = round(fps)
    cases = {
        "same_palette.mp4": ([Shot(4 * s, seed=31, tint=7, speed=(0.6, 0.0)), Shot(4 * s, seed=32, tint=7, speed=(-0.5, 0.2)),
                              Shot(4 * s, seed=33, tint=7, speed=(0.4, -0.3)), Shot(4 * s, seed=34, tint=7)],
                             [Transition("dissolve", s), Transition("dissolve", s), Transition("fade", s // 2)]),
        "close_cuts.mp4": ([Shot(2 * s, seed=40, speed=(0.8, 0.0))]
                           + [Shot(round(d * fps), seed=41 + i, speed=(0.8, 0.3)) for i, d in enumerate((0.3, 0.5, 0.7, 1.0))]
                           + [Shot(2 * s, seed=46, speed=(-0.6, 0.0))], None),
        "fast_pan.mp4": ([Shot(4 * s, seed=50, speed=(5.0, 1.0))], None),
        "zoom.mp4": ([Shot(4 * s, seed=51, zoom=0.02)], None),
        "static.mp4": ([Shot(4 * s, seed=52)], None),
    }
    truths = {name: write_video(folder / name, shots, trs, size=size, fps=fps) for name, (shots, trs) in cases.items()}
    frames, truth = compose([Shot(4 * s, seed=53, speed=(0.7, 0.2))], [], size[1], size[0], fps)
    frames[2 * s] = np.clip(frames[2 * s].astype(np.int16) + 160, 0, 255).astype(np.uint8)  # a camera flash
    write_frames(folder / "flash.mp4", frames, fps)
    truths["flash.mp4"] = truth
    return truths
