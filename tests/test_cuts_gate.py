"""The transition gate: single shots that only look like transitions by the size of their change
(an overlay fading in, an object leaving, a tilt, a lighting change, a stuttering pan) stay one
clip; dissolves and fades keep their boundary; --explain says why for every candidate."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate.scorers.cascade import Cascade, CascadeConfig, default_levels
from svdcli.curate.scorers.transition_gate import GateConfig, blend_fit, judge_gradual, judge_hard
from svdcli.video.decode import decode_once
from svdcli.video.synth import texture
from svdcli.video.write import write_frames

FPS, W, H = 24, 160, 96


def ramp(n: int) -> np.ndarray:
    return np.clip(np.arange(n, dtype=np.float32) / max(n - 1, 1), 0, 1)[:, None, None, None]


def overlay_fade_in() -> np.ndarray:
    """A still textured scene; a caption box fades in over 12 frames at 1 s and stays."""
    base = texture(1, H, W).astype(np.float32)
    boxed = base.copy()
    boxed[62:86, 30:130] = 235.0  # the caption: a fifth of the picture
    w = np.r_[np.zeros(24), ramp(12).ravel(), np.ones(60)][:, None, None, None]
    return (base * (1 - w) + boxed * w).astype(np.uint8)


def object_leaves() -> np.ndarray:
    """A still scene; a bright disc crosses it and flies out of the frame within 0.4 s."""
    import cv2

    base = texture(2, H, W)
    frames = []
    for i in range(96):
        f = base.copy()
        x = 40 + max(0, i - 30) * 14  # still, then fast to the right and out
        cv2.circle(f, (x, 48), 22, (250, 240, 60), -1)
        frames.append(f)
    return np.stack(frames)


def tilt_down() -> np.ndarray:
    """A fast tilt down over a tall texture: still, 9 px a frame for half a second, still again."""
    tex = texture(3, H + 120, W)
    return np.stack([tex[min(max(i - 30, 0), 12) * 9:][:H] for i in range(96)])


def lights_dim() -> np.ndarray:
    """One still scene whose light drops to half over 12 frames (never to black)."""
    base = texture(4, H, W).astype(np.float32)
    gain = 1.0 - 0.5 * np.r_[np.zeros(30), ramp(12).ravel(), np.ones(54)][:, None, None, None]
    return (base * gain).astype(np.uint8)


def stutter_pan() -> np.ndarray:
    """A pan that holds each position 4 frames then jumps 5 px (a duplicated-frame cadence):
    every jump is a big change between frames whose neighbours did not change at all."""
    tex = texture(5, H, W + 200)
    return np.stack([tex[:, (i // 4) * 5:(i // 4) * 5 + W] for i in range(96)])


def dissolve() -> np.ndarray:
    a, b = texture(6, H, W).astype(np.float32), texture(7, H, W).astype(np.float32)
    w = np.r_[np.zeros(36), ramp(14).ravel(), np.ones(46)][:, None, None, None]
    return (a * (1 - w) + b * w).astype(np.uint8)


SINGLE_SHOTS = {"overlay": overlay_fade_in, "object_leaves": object_leaves, "tilt": tilt_down,
                "lights_dim": lights_dim, "stutter_pan": stutter_pan}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    out = {}
    for name, make in {**SINGLE_SHOTS, "dissolve": dissolve}.items():
        out[name] = write_frames(root / f"{name}.mp4", make(), FPS)
    return out


def detect(path, gate: GateConfig | None = GateConfig()) -> Cascade:
    cascade = Cascade(CascadeConfig(default_levels(), gate=gate))
    decode_once(path, cascade.consumers())
    return cascade


@pytest.mark.parametrize("name", sorted(SINGLE_SHOTS))
def test_single_shots_are_not_cut(videos, name):
    """Each of these one-shot videos makes the levels propose a boundary by the size of the change
    alone (checked here with the gate off); the gate rejects every such candidate, with a reason."""
    ungated = detect(videos[name], gate=None)
    assert ungated.boundaries(), f"{name}: no level proposed anything, the case tests nothing"
    cascade = detect(videos[name])
    assert cascade.boundaries() == []
    rejected = [c for c in cascade.explain() if not c["kept"]]
    assert rejected and all(c["reason"] for c in rejected)


def test_a_dissolve_keeps_its_boundary_with_its_reason(videos):
    cascade = detect(videos["dissolve"])
    [b] = cascade.boundaries()
    assert 36 <= b.time * FPS <= 50
    kept = [c for c in cascade.explain() if c["kept"]]
    assert kept and all("blend" in c["reason"] for c in kept)
    assert all(c["measures"]["blend_gain"] >= GateConfig().min_blend_gain for c in kept)


def thumbs(frames: np.ndarray) -> list[np.ndarray]:
    """(27, 48, 3) Y/U/V thumbnails of RGB frames, as the cascade makes them."""
    import cv2

    from svdcli.curate.scorers.cascade import thumbnail

    return [thumbnail(cv2.cvtColor(f, cv2.COLOR_RGB2YUV)) for f in frames]


def test_blend_fit_explains_a_dissolve_and_not_a_pan():
    a, b = texture(8, H, W).astype(np.float32), texture(9, H, W).astype(np.float32)
    mix = thumbs(np.stack([a, 0.5 * a + 0.5 * b, b]).astype(np.uint8))
    r_blend, r_end, progress = blend_fit(mix[0], mix[1], mix[2], shift=6)
    assert r_blend < 0.25 * r_end and progress == pytest.approx(0.5, abs=0.1)
    tex = texture(10, H, W + 120)
    pan = thumbs(np.stack([tex[:, x:x + W] for x in (0, 60, 120)]))  # 60 px steps: beyond the search
    r_blend, r_end, _ = blend_fit(pan[0], pan[1], pan[2], shift=6)
    assert r_blend > 0.6 * r_end


def test_fade_to_black_is_a_transition_and_an_overlay_is_not():
    scene = texture(11, H, W).astype(np.float32)
    fade = thumbs((scene[None] * np.linspace(1, 0, 6)[:, None, None, None]).astype(np.uint8))
    assert judge_gradual(fade[0], fade[1:-1], fade[-1], GateConfig()).kept
    over = thumbs(overlay_fade_in()[[20, 28, 30, 32, 40]])
    verdict = judge_gradual(over[0], over[1:-1], over[-1], GateConfig())
    assert not verdict.kept and "local change" in verdict.reason


def test_hard_cut_gate_tells_a_cut_from_a_camera_step():
    a, b = texture(12, H, W), texture(13, H, W)
    cut = thumbs(np.stack([a, b]))
    assert judge_hard(cut[0], cut[1], GateConfig()).kept
    tex = texture(14, H, W + 40)
    step = thumbs(np.stack([tex[:, :W], tex[:, 12:12 + W]]))  # a 12 px jump of the camera
    verdict = judge_hard(step[0], step[1], GateConfig())
    assert not verdict.kept and "camera motion" in verdict.reason


def test_explain_folder_from_the_cli(videos, tmp_path):
    out, why = tmp_path / "clips.parquet", tmp_path / "why"
    res = CliRunner().invoke(app, ["curate", "cuts", str(videos["overlay"]), str(videos["dissolve"]), "--out", str(out),
                                   "--explain", str(why), "--no-progress"])
    assert res.exit_code == 0, res.output
    files = sorted(why.glob("*.json"))
    assert len(files) == 2
    by_video = {json.loads(f.read_text())["video_path"].rsplit("/", 1)[-1]: json.loads(f.read_text()) for f in files}
    overlay = by_video["overlay.mp4"]
    assert overlay["boundaries"] == [] and overlay["candidates"]
    assert all(not c["kept"] and c["reason"] for c in overlay["candidates"])
    dissolved = by_video["dissolve.mp4"]
    assert len(dissolved["boundaries"]) == 1 and any(c["kept"] for c in dissolved["candidates"])
