"""Planner arithmetic against hand counts: parameters, AdamW states, ZeRO partitioning on 1, 2
and 8 ranks, DeepSpeed's own ZeRO-2 estimator, and the 8-bit optimizer's real states."""
import math

import pytest
import torch
from torch import nn

from svdcli.train.plan.memory import Layout, Params, model_states, optimizer_state_bytes, zero2_states

MB = 2**20


def _toy() -> nn.Module:
    """Linear(10, 20) frozen (200 + 20 elements), Linear(20, 5, no bias) trained (100)."""
    net = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 5, bias=False))
    net[0].requires_grad_(False)
    return net


def test_params_count_what_trains_and_what_is_frozen():
    p = Params.of(_toy())
    assert (p.trainable, p.frozen) == (100, 220)
    assert p.weight_bytes == 4 * 320
    assert (p.largest, p.largest_module) == (200, 220)      # a weight; a module with its bias
    assert sorted(p.sizes) == [20, 100, 200]


@pytest.mark.parametrize("ranks", [1, 2, 8])
def test_zero_partitions_by_hand(ranks):
    p = Params.of(_toy())
    share = math.ceil(100 / ranks)                          # DeepSpeed's flat partition of the 100 trained
    bucket = 1000                                           # elements per reduction bucket
    s0 = model_states(p, Layout(zero=0, ranks=ranks, reduce_bucket=bucket), ema=True)
    assert (s0.weights, s0.master, s0.optimizer, s0.ema) == (4 * 320, 0, 8 * 100, 4 * 100)
    assert (s0.grad_partition, s0.buckets) == (0, 0)        # gradients stay in .grad (traced)

    s1 = model_states(p, Layout(zero=1, ranks=ranks, reduce_bucket=bucket), ema=True)
    assert (s1.weights, s1.master, s1.optimizer) == (4 * 320, 4 * share, 8 * share)
    assert (s1.grad_partition, s1.buckets) == (0, 4 * bucket)

    s2 = model_states(p, Layout(zero=2, ranks=ranks, reduce_bucket=bucket, overlap_comm=True), ema=True)
    assert (s2.weights, s2.master, s2.optimizer, s2.grad_partition) == (4 * 320, 4 * share, 8 * share, 4 * share)
    assert s2.buckets == 2 * 4 * bucket                     # double-buffered with overlap_comm
    assert s2.ema == 4 * 100                                # EMA shadows are never partitioned

    s3 = model_states(p, Layout(zero=3, ranks=ranks, reduce_bucket=bucket, prefetch_bucket=50,
                                persistence_threshold=150), ema=False)
    persistent = 20 + 100                                   # tensors below 150 elements stay whole
    assert s3.weights == math.ceil(4 * 320 / ranks) + 4 * persistent
    assert s3.gathered == 4 * (220 + 50)                    # largest module + prefetch bucket
    assert s3.master == 0                                   # fp32 weights are updated in place
    assert s3.optimizer == 8 * share and s3.grad_buffers == 4 * share + 4 * bucket


def test_offloaded_optimizer_moves_states_to_host():
    p = Params.of(_toy())
    on_gpu = model_states(p, Layout(zero=2, ranks=2, reduce_bucket=1000), ema=False)
    off = model_states(p, Layout(zero=2, ranks=2, reduce_bucket=1000, offload_optimizer=True), ema=False)
    assert off.master == off.optimizer == off.grad_partition == 0
    # master, states, gradient partition and DeepSpeed's copy-back buffer of the partition
    assert off.host == on_gpu.master + on_gpu.optimizer + on_gpu.grad_partition + 4 * 50
    assert off.buckets == on_gpu.buckets + 4 * 200          # + a staging buffer of the largest parameter


@pytest.mark.parametrize("gpus", [1, 2, 8])
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_matches_deepspeeds_estimator_in_its_layout(gpus, offload):
    """DeepSpeed's estimator assumes 16-bit weights and gradients with fp32 master and states;
    our accounting in that layout gives the same bytes (ours keeps fp32 weights: docs)."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n = 1_524_623_080                                       # SVD's UNet, rounded to divide by 8
    params = Params(trainable=n, frozen=0, weight_bytes=2 * n, largest=0, largest_module=0)
    _, theirs = estimate_zero2_model_states_mem_needs(n, num_gpus_per_node=gpus, cpu_offload=offload)
    assert zero2_states(params, Layout(ranks=gpus, offload_optimizer=offload), bytes_per_weight=2) == theirs


def test_adamw_states_traced_match_the_formula():
    from svdcli.train.config import config_from_dict
    from svdcli.train.plan.trace import optimizer_peak

    cfg = config_from_dict({})
    shapes = [(1000,), (30, 7)]
    block = lambda nbytes: math.ceil(nbytes / 512) * 512    # noqa: E731 - the CUDA allocator's rounding
    states, temporaries = optimizer_peak(shapes, cfg, Layout(zero=0), device="cuda")
    assert states == sum(2 * block(4 * math.prod(s)) for s in shapes)   # m and v (step counters stay on the CPU)
    assert temporaries == sum(block(4 * math.prod(s)) for s in shapes)  # foreach AdamW: sqrt(v) of every tensor
    flat, _ = optimizer_peak(shapes, cfg, Layout(zero=2, ranks=8), device="cpu")
    assert flat == 8 * math.ceil(1210 / 8)                  # one flat partition of the 1210 trained


def test_8bit_adamw_states_are_what_bitsandbytes_allocates():
    bnb = pytest.importorskip("bitsandbytes")
    n = 100_003
    p = nn.Parameter(torch.zeros(n))
    opt = bnb.optim.AdamW8bit([p])
    p.grad = torch.ones(n)
    opt.step()
    st = opt.state[p]
    real = sum(st[k].numel() * st[k].element_size() for k in ("state1", "state2", "absmax1", "absmax2"))
    assert real == optimizer_state_bytes(n, "adamw8bit")
    assert optimizer_state_bytes(n, "adamw") / real > 3.9   # the point of it: ~4x less than AdamW
