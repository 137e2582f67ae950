"""The plan against memory measured on the CPU (torch's allocator, through the profiler: see
tests/plan_helpers.py) for small configs of the real tiny model and the real DeepSpeed engine:
within 10% (they agree within ~1% on the machine these were written on). One rank only: on one
rank a ZeRO partition is the whole, so partitioning itself is checked by hand counts
(tests/test_plan_memory.py), not by measurement."""
import pytest

from plan_helpers import ds_config, measured_peak, tiny_config
from test_train_helpers import one_thread  # noqa: F401 - autouse fixture

TOLERANCE = 0.10

CASES = {
    # name: (config overrides, ZeRO stage, DeepSpeed extras, marks)
    "bf16, checkpointing, ZeRO-2": (dict(precision="bf16", activation_checkpointing="true"), 2, {}, ()),
    "LoRA, bf16, ZeRO-1": (dict(precision="bf16", stage="finetune", lora__rank=8), 1, {}, (pytest.mark.slow,)),
    "fp32, no ZeRO": (dict(), 0, {}, (pytest.mark.slow,)),
    "stored latents, 128 px, ZeRO-2": (dict(data__latents="true", data__height=128, data__width=128), 2, {},
                                       (pytest.mark.slow,)),
    "temporal layers, accumulation, ZeRO-3": (dict(freeze_spatial="true", data__batch_size=1, data__grad_accum=2), 3,
                                              {}, (pytest.mark.slow,)),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=CASES[n][3]) for n in CASES])
def test_plan_matches_measured_cpu_peak(name, tmp_path):
    from svdcli.train.plan.plan import make_plan

    values, zero, extra, _ = CASES[name]
    cfg = tiny_config(**values)
    ds = ds_config(cfg, zero, tmp_path, **extra)
    plan = make_plan(cfg, ds, 1, device="cpu")
    measured = measured_peak(cfg, ds)["peak"]
    assert abs(plan.peak / measured - 1) <= TOLERANCE, \
        f"{name}: plan {plan.peak / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB"


@pytest.mark.slow
def test_8bit_adamw_plan_matches_measured_step(tmp_path):
    """bitsandbytes' CPU update dequantises into float32 temporaries its CUDA kernel does not
    make, so the update phase is not comparable on a CPU; the states before a step and the
    forward + backward peak are."""
    pytest.importorskip("bitsandbytes")
    from svdcli.train.plan.plan import make_plan

    cfg = tiny_config(optim__name="adamw8bit")
    ds = ds_config(cfg, 2, tmp_path)
    plan = make_plan(cfg, ds, 1, device="cpu")
    measured = measured_peak(cfg, ds)
    static = plan.states.static + plan.encoder_weights
    assert abs(static / measured["before"] - 1) <= TOLERANCE
    assert abs(plan.phases["step"] / measured["step"] - 1) <= TOLERANCE


@pytest.mark.slow
def test_offloaded_optimizer_plan_matches_measured_host_and_device(tmp_path):
    """On a CPU the offloaded states share the device's memory: GPU plan + host plan together."""
    from svdcli.train.plan.plan import make_plan

    cfg = tiny_config()
    ds = ds_config(cfg, 2, tmp_path, offload_optimizer={"device": "cpu"})
    plan = make_plan(cfg, ds, 1, device="cpu")
    measured = measured_peak(cfg, ds)["peak"]
    assert plan.states.host > 0
    assert abs((plan.peak + plan.states.host) / measured - 1) <= TOLERANCE
