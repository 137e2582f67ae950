"""Camera-motion labels from Farneback flow: synthetic camera moves with known parameters."""
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from svdcli.curate.scorers.camera_motion import (CameraConfig, classify, clip_camera_motion,  # noqa: E402
                                         flow_parameters, parts)
from svdcli.curate.stages.motion import MotionConfig  # noqa: E402

W, H = 256, 144  # the analysis size of a 16:9 video


@pytest.fixture(scope="module")
def texture():
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur((rng.random((600, 800)) * 255).astype(np.uint8), (0, 0), 3)
    return cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)


def view(tex, cx, cy, scale=1.0, roll=0.0):
    """The frame a camera centred on texture point (cx, cy) sees, magnified by `scale`, rolled by `roll` degrees."""
    m = cv2.getRotationMatrix2D((cx, cy), roll, scale)
    m[:, 2] += np.array([W / 2 - cx, H / 2 - cy])
    return cv2.warpAffine(tex, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def flow(a, b):
    c = MotionConfig()
    return cv2.calcOpticalFlowFarneback(a, b, None, c.pyr_scale, c.levels, c.winsize, c.iterations,
                                        c.poly_n, c.poly_sigma, 0)


# camera moves between two frames: texture-centre shift, scale, roll
MOVES = {
    "pan_right": ((3, 0), 1.0, 0.0), "pan_left": ((-3, 0), 1.0, 0.0),
    "tilt_up": ((0, -3), 1.0, 0.0), "tilt_down": ((0, 3), 1.0, 0.0),
    "zoom_in": ((0, 0), 1.03, 0.0), "zoom_out": ((0, 0), 0.97, 0.0),
    "rotate": ((0, 0), 1.0, 1.5), "static": ((0, 0), 1.0, 0.0),
}


@pytest.mark.parametrize("label", list(MOVES))
def test_known_camera_moves_are_labelled(texture, label):
    (dx, dy), scale, roll = MOVES[label]
    a = view(texture, 400, 300)
    p = flow_parameters(flow(a, view(texture, 400 + dx, 300 + dy, scale, roll)), a)
    got, share = classify(p)
    assert got == label
    assert share > 0.9


def test_parameters_recover_the_move(texture):
    """Translation in px, divergence = 2 (s - 1) for a zoom by s, curl = 2 theta for a roll by theta."""
    p = flow_parameters(flow(view(texture, 400, 300), view(texture, 402, 301)))
    assert p["tx"] == pytest.approx(-2.0, abs=0.05) and p["ty"] == pytest.approx(-1.0, abs=0.05)
    p = flow_parameters(flow(view(texture, 400, 300), view(texture, 400, 300, 1.02)))
    assert p["div"] == pytest.approx(2 * 0.02, rel=0.1)
    p = flow_parameters(flow(view(texture, 400, 300), view(texture, 400, 300, 1.0, 1.0)))
    assert abs(p["curl"]) == pytest.approx(2 * np.deg2rad(1.0), rel=0.1)


def test_subject_motion_and_no_dominant_motion(texture):
    diagonal = flow_parameters(flow(view(texture, 400, 300), view(texture, 403, 303)))
    assert classify(diagonal)[0] == "complex"
    a = view(texture, 400, 300)
    b = a.copy()  # a static camera; a subject (a quarter of the frame) moves right
    b[20:110, 60:150] = a[20:110, 54:144]
    subject = flow_parameters(flow(a, b), a)
    assert classify(subject)[0] == "static"
    assert subject["magnitude"] > 0.25  # the flow moves; the camera does not
    c = a.copy()  # three strips, three motions: no camera motion explains most of the frame
    c[:, :85] = view(texture, 397, 300)[:, :85]
    c[:, 85:170] = view(texture, 400, 304)[:, 85:170]
    c[:, 170:] = view(texture, 403, 297)[:, 170:]
    assert classify(flow_parameters(flow(a, c), a))[0] == "complex"


def test_static_threshold_and_clip_confidence(texture):
    a = view(texture, 400, 300)
    slow = flow_parameters(flow(a, view(texture, 400.1, 300)))
    assert classify(slow)[0] == "static"
    assert classify(slow, CameraConfig(static_below=0.05))[0] == "pan_right"
    pan = flow_parameters(flow(a, view(texture, 403, 300)))
    label, conf = clip_camera_motion([pan, pan, pan, slow])
    assert label == "pan_right"
    assert conf == pytest.approx(0.75 * classify(pan)[1], rel=0.05)  # 3 of 4 pairs agree
    with pytest.raises(ValueError):
        clip_camera_motion([])


def two_motions(seed: int) -> np.ndarray:
    """A flow field (H, W, 2): a random global affine motion, a second motion over a random
    share of the frame and noise, the kind of field the robust fit needs several rounds for."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = xs - (W - 1) / 2, ys - (H - 1) / 2
    tx, ty = rng.normal(0, 2, 2)
    a, b, c, d = rng.normal(0, 0.01, 4)
    f = np.stack([tx + a * x + b * y, ty + c * x + d * y], axis=-1)
    f[xs < W * rng.uniform(0.2, 0.45)] += rng.normal(0, 3, 2)
    return (f + rng.normal(0, 0.3, f.shape)).astype(np.float32)


def test_the_fit_stops_once_it_repeats_itself_with_the_parameters_of_every_round(texture, monkeypatch):
    """The robust fit ends when a round keeps the points the last fit was made on (every further
    round would repeat that fit): the parameters of all FIT_ROUNDS rounds, to the last bit, on
    camera moves seen by Farneback and on fields with two motions that take several rounds."""
    import svdcli.curate.scorers.camera_motion as cm

    a = view(texture, 400, 300)
    cases = [(flow(a, view(texture, 400 + dx, 300 + dy, scale, roll)), a) for (dx, dy), scale, roll in MOVES.values()]
    cases += [(two_motions(seed), a) for seed in range(8)]
    fits, real = [], np.linalg.lstsq
    monkeypatch.setattr(np.linalg, "lstsq", lambda *args, **kw: fits.append(1) or real(*args, **kw))
    rounds = []
    for f, gray in cases:
        fits.clear()
        got = cm.flow_parameters(f, gray)
        rounds.append(len(fits))
        with monkeypatch.context() as m:
            m.setattr(np, "array_equal", lambda x, y: False)  # never stop early: the fit as defined
            assert got == cm.flow_parameters(f, gray)
    assert min(rounds) == 1 and 1 < max(rounds)  # fits that repeat at once, and fits that settle later
