"""LinearPredictionGuider: the official per-frame ramp, one batched pass, per-video ordering."""
import json

import pytest
import torch

from svdcli.diffusion.guidance import LinearPredictionGuider, guided_denoiser
from numeric import assert_ulp_distance


@pytest.mark.parametrize("name", ["min1.0_max2.5_T14", "min1.5_max3.0_T25", "min1.0_max2.5_T5"])
def test_ramp_matches_official(fixtures_dir, name):
    ref = json.loads((fixtures_dir / "edm_reference.json").read_text())["LinearPredictionGuider"][name]
    guider = LinearPredictionGuider(ref["min_scale"], ref["max_scale"], ref["num_frames"])
    assert_ulp_distance(guider.scales(), torch.tensor(ref["scale_float32"]), 2)  # a linspace: to an ulp or two


def _recording_denoiser(calls):
    """D = x + crossattn offset, so D_c - D_u reveals which conditioning each row saw."""
    def denoiser(x, sigma, cond):
        calls.append({k: v.shape if isinstance(v, torch.Tensor) else v for k, v in cond.items()})
        return x + cond["crossattn"].reshape(-1, 1, 1, 1)
    return denoiser


def test_one_batched_pass_uncond_first_and_ramp_per_video():
    b, t = 2, 4
    guider = LinearPredictionGuider(1.0, 2.5, t)
    calls = []
    guided = guided_denoiser(_recording_denoiser(calls), guider)
    x = torch.zeros(b * t, 1, 2, 3)
    cond = {"crossattn": torch.tensor([1.0] * t + [10.0] * t), "image_only_indicator": torch.zeros(b, t),
            "num_video_frames": t}
    uncond = {"crossattn": torch.zeros(b * t), "image_only_indicator": torch.zeros(b, t), "num_video_frames": t}
    d = guided(x, torch.ones(b * t), cond=cond, uncond=uncond)
    assert len(calls) == 1 and calls[0]["crossattn"] == (2 * b * t,)
    assert calls[0]["image_only_indicator"] == (2 * b, t) and calls[0]["num_video_frames"] == t
    # D_u = 0, D_c = crossattn: guided value is w_t * crossattn, video by video
    w = guider.scales()
    torch.testing.assert_close(d[:t, 0, 0, 0], 1.0 * w)
    torch.testing.assert_close(d[t:, 0, 0, 0], 10.0 * w)


def test_scale_one_everywhere_skips_the_unconditional_pass():
    calls = []
    guided = guided_denoiser(_recording_denoiser(calls), LinearPredictionGuider(1.0, 1.0, 3))
    cond = {"crossattn": torch.full((3,), 2.0)}
    d = guided(torch.zeros(3, 1, 1, 1), torch.ones(3), cond=cond, uncond={"crossattn": torch.zeros(3)})
    assert len(calls) == 1 and calls[0]["crossattn"] == (3,)
    assert torch.all(d == 2.0)


def test_frame_count_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of 4 frames"):
        LinearPredictionGuider(1.0, 2.5, 4).combine(torch.zeros(6, 1), torch.zeros(6, 1))
