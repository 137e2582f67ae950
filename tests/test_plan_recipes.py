"""The recipes that fit (pipelines/train/fit/): each one's `# plan:` lines are what the planner
says today, and every one fits its GPUs; among them the goal, a full-UNet SVD-XT finetune at
25 x 576 x 1024 on 8 x 80 GB."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from test_train_helpers import REPO

FIT = sorted((REPO / "pipelines" / "train" / "fit").glob("*.yaml"))
PLAN_LINE = re.compile(r"^# plan: (?P<args>.*?) -> (?P<peak>[\d.]+) GiB$", re.M)


def plan_lines(path):
    out = []
    for m in PLAN_LINE.finditer(path.read_text()):
        args = shlex.split(m["args"])
        opts = dict(zip(args[::2], args[1::2]))
        out.append((int(opts["--gpus"]), float(opts["--gpu-memory"]), opts.get("--deepspeed"), float(m["peak"])))
    return out


def test_every_fit_recipe_loads_and_names_its_gpus():
    from svdcli.train.config import load_config

    assert len(FIT) >= 10
    for path in FIT:
        cfg = load_config(path)
        lines = plan_lines(path)
        assert lines, f"{path.name} has no '# plan: ... -> N GiB' line"
        assert cfg.family_config.model == "svd" and cfg.data.batch_size == 1
        for gpus, memory, deepspeed, _ in lines:
            assert memory in (24, 80) and (deepspeed is None or (REPO / deepspeed).is_file())


@pytest.mark.slow
@pytest.mark.parametrize("path", FIT, ids=lambda p: p.stem)
def test_fit_recipes_fit_their_gpus_as_recorded(path):
    """Full-size traces (~20 s each on two cores): the planner's numbers and the headers agree."""
    from svdcli.train.config import load_config
    from svdcli.train.plan.plan import Target, make_plan

    cfg = load_config(path)
    for gpus, memory, deepspeed, recorded in plan_lines(path):
        ds = json.loads((REPO / deepspeed).read_text()) if deepspeed else {}
        plan = make_plan(cfg, ds, gpus)
        assert plan.fits(Target(gpus, memory)), f"{path.name} on {gpus} x {memory} GiB: {plan.peak / 2**30:.1f} GiB"
        assert abs(plan.peak / 2**30 - recorded) <= 0.15, f"{path.name}: recorded {recorded}, planned {plan.peak / 2**30:.2f}"


@pytest.mark.slow
def test_the_goal_full_unet_svd_xt_fits_8_x_80():
    from svdcli.train.config import load_config
    from svdcli.train.plan.plan import Target, make_plan

    cfg = load_config(REPO / "pipelines/train/fit/svd_xt_full_80gb.yaml")
    assert (cfg.data.frames, cfg.data.height, cfg.data.width, cfg.lora.rank) == (25, 576, 1024, 0)
    assert not cfg.family_config.freeze_spatial
    plan = make_plan(cfg, json.loads((REPO / "pipelines/deepspeed/zero2.json").read_text()), 8)
    assert plan.params.trainable > 1.5e9 and plan.fits(Target(8, 80)) and plan.peak < 80 * 2**30
