"""The conditioning image and the written video: bad input fails clearly, outputs are playable."""
import numpy as np
import pytest

from svdcli.errors import SvdError
from svdcli.families.image import fit_size, prepare_image, read_image, to_model_range
from svdcli.sample.output import write_video


def _save(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path)
    return path


def test_missing_and_corrupt_images_are_clear_errors(tmp_path):
    with pytest.raises(SvdError, match="not found"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(SvdError, match="cannot read .*bad.png"):
        read_image(bad)


def test_transparent_image_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent
    pixels = read_image(_save(tmp_path / "a.png", rgba))
    assert pixels.shape == (4, 6, 3)
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[0, 5]) == (255, 255, 255)


def test_odd_aspect_is_cropped_not_squashed_and_reported():
    # a square image with a red left third: cropping to 2:1 keeps it red on the left edge,
    # squashing would make the red band a third of the width
    img = np.zeros((300, 300, 3), np.uint8)
    img[:, :100] = (255, 0, 0)
    prepared = prepare_image(img, 128, 64)
    assert prepared.pixels.shape == (64, 128, 3)
    assert "crop" in prepared.note and "300x300" in prepared.note
    red_cols = (prepared.pixels[32, :, 0] > 200).sum()
    assert 40 <= red_cols <= 46  # a third of 128 px, as in the source
    same = prepare_image(prepared.pixels, 128, 64)
    assert same.note is None


def test_sizes_round_to_multiples_of_64_and_pixels_to_minus_one_one():
    assert fit_size(1000, 570) == (960, 512)
    assert fit_size(10, 10) == (64, 64)
    x = to_model_range(np.array([[[0, 255, 51]]], np.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert x.flatten().tolist() == pytest.approx([-1.0, 1.0, -0.6])


@pytest.mark.parametrize("name,fmt", [("v.mp4", None), ("v.gif", None), ("frames", None), ("v.mp4", "gif")])
def test_written_video_has_every_frame(tmp_path, name, fmt):
    # smooth frames that differ from each other, so lossy coding keeps them recognisable
    yy, xx = np.mgrid[0:64, 0:96]
    frames = np.stack([np.stack([xx * 2 + 10 * t, yy * 3, np.full_like(xx, 30 * t)], -1)
                       for t in range(7)]).clip(0, 255).astype(np.uint8)
    path = write_video(frames, tmp_path / name, fps=7, fmt=fmt)
    if path.is_dir():
        assert len(list(path.glob("frame_*.png"))) == 7
        return
    from PIL import Image

    if path.suffix == ".gif":
        assert Image.open(path).n_frames == 7
        return
    import av

    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert float(container.streams.video[0].average_rate) == 7
    assert len(decoded) == 7 and decoded[0].shape == (64, 96, 3)
    assert np.abs(decoded[3].astype(int) - frames[3]).mean() < 4  # the frames themselves, lightly compressed


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(SvdError, match="output format"):
        write_video(np.zeros((1, 64, 64, 3), np.uint8), tmp_path / "v.avi", fps=7)
