"""The planner covers every `svd train` family through the Family protocol: the trainable set it
plans is the one the family's real build trains, and a step it cannot trace is a clear error."""
import pytest
import torch

from svdcli.train.config import config_from_dict
from svdcli.train.plan.memory import Params

TINY = {"model": "tiny", "data": {"frames": 4, "height": 64, "width": 64, "batch_size": 1}}
CASES = {
    "svd video": {"family": "svd", "stage": "video"},
    "svd temporal": {"family": "svd", "stage": "video", "freeze_spatial": True},
    "svd lora": {"family": "svd", "stage": "finetune", "lora": {"rank": 4}},
    "svd image": {"family": "svd", "stage": "image", "cond": {"mode": "t2v"}},
    "video_ldm video": {"family": "video_ldm", "stage": "video"},
    "video_ldm predict": {"family": "video_ldm", "stage": "predict"},
    "vdm video": {"family": "vdm", "stage": "video", "text": "tiny", "data": {"height": 32, "width": 32}},
}


def _cfg(name):
    values = {**TINY, **CASES[name], "data": {**TINY["data"], **CASES[name].get("data", {})}}
    return config_from_dict(values)


@pytest.mark.parametrize("name", CASES)
def test_meta_build_trains_what_the_real_build_trains(name):
    from svdcli.train.config import family_of

    cfg = _cfg(name)
    family = family_of(cfg)
    real = Params.of(family.build(cfg))
    with torch.device("meta"):
        planned = Params.of(family.build(cfg))
    assert (planned.trainable, planned.frozen) == (real.trainable, real.frozen) and real.trainable > 0


def test_a_pixel_space_family_plans():
    from svdcli.train.plan.plan import make_plan

    plan = make_plan(_cfg("vdm video"), {}, 1)
    assert plan.encoder_weights < 2**20 and plan.trace.activations > 0 and plan.model_flops > 0


def test_a_step_that_reads_values_has_no_plan_and_says_so():
    from svdcli.train.plan.plan import make_plan
    from svdcli.train.plan.trace import NotTraceable

    cfg = config_from_dict({**TINY, "family": "video_ldm", "stage": "decoder", "decoder": {"lpips_backbone": "random"}})
    with pytest.raises(NotTraceable, match="video_ldm stage decoder: its step cannot be traced"):
        make_plan(cfg, {}, 1)
