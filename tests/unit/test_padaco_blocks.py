"""PADACO building blocks: gradient reversal and its schedule, label-space weights, the DDP sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelit.datasets.sampling import (
    WeightedDistributedSampler,
    label_space_weights,
    label_space_weights_bruteforce,
)
from facelit.losses.grl import GradientReversal, dann_lambda, grad_reverse


# ---- gradient reversal ------------------------------------------------------------------------
def test_grl_is_identity_forward_and_negates_scaled_gradient():
    x = torch.randn(4, 5, requires_grad=True)
    upstream = torch.randn(4, 5)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -0.3 * upstream)


def test_grl_module_lambda_zero_blocks_gradient_and_chains_with_loss():
    layer = GradientReversal(0.0)
    x = torch.randn(3, requires_grad=True)
    (layer(x) * 2).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))
    layer.lambd = 2.0
    x.grad = None
    (layer(x) ** 2).sum().backward()  # d/dx x^2 = 2x, reversed and scaled by 2
    torch.testing.assert_close(x.grad, -4.0 * x.detach())


def test_grl_rejects_negative_lambda():
    with pytest.raises(ValueError, match="lambda"):
        grad_reverse(torch.zeros(1), -1.0)


def test_dann_schedule_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann_lambda(1.0, lambda_max=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert dann_lambda(3.0) == dann_lambda(1.0)  # clipped
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)


# ---- label-space weights ----------------------------------------------------------------------
def test_weights_hand_computed_one_neighbour():
    source = torch.tensor([[0.0, 0, 0], [10, 0, 0], [20, 0, 0], [80, 0, 0]])
    target = torch.tensor([[1.0, 0, 0], [9, 0, 0], [11, 0, 0]])  # -> rows 0, 1, 1
    w = label_space_weights(source, target, num_neighbours=1)
    # counts (1, 2, 0, 0), mean-1 normalisation over 4 samples: * 4 / 3
    torch.testing.assert_close(w, torch.tensor([4 / 3, 8 / 3, 0.0, 0.0]))


def test_weights_two_neighbours_share_the_unit_and_floor():
    source = torch.tensor([[0.0, 0, 0], [10, 0, 0], [50, 0, 0]])
    target = torch.tensor([[4.0, 0, 0]])  # nearest: rows 0 and 1, half a unit each
    w = label_space_weights(source, target, num_neighbours=2, floor=0.5)
    counts = torch.tensor([0.5, 0.5, 0.0]) + 0.5
    torch.testing.assert_close(w, counts * 3 / counts.sum())


def test_weights_kdtree_equals_bruteforce_and_partial_shift():
    g = torch.Generator().manual_seed(0)
    source = (torch.rand(3000, 3, generator=g) * 2 - 1) * torch.tensor([90.0, 35, 30])
    target = (torch.rand(500, 3, generator=g) * 2 - 1) * torch.tensor([60.0, 25, 20])
    w = label_space_weights(source, target, num_neighbours=5)
    torch.testing.assert_close(w, label_space_weights_bruteforce(source, target, num_neighbours=5))
    assert w.mean().item() == pytest.approx(1.0)
    outside = source[:, 0].abs() > 70  # poses the target never shows
    assert w[outside].sum() == 0
    assert w[source[:, 0].abs() < 50].mean() > 1.0


@pytest.mark.parametrize(
    "source, target, k, match",
    [
        (torch.zeros(0, 3), torch.zeros(1, 3), 1, "non-empty"),
        (torch.zeros(4, 3), torch.zeros(2, 2), 1, "columns"),
        (torch.zeros(4, 3), torch.tensor([[0.0, float("nan"), 0]]), 1, "row 0"),
        (torch.zeros(4, 3), torch.zeros(2, 3), 5, "num_neighbours"),
    ],
)
def test_weights_bad_input(source, target, k, match):
    with pytest.raises(ValueError, match=match):
        label_space_weights(source, target, num_neighbours=k)


# ---- sampler ----------------------------------------------------------------------------------
def test_sampler_rank_shards_equal_global_draw():
    weights = torch.tensor([0.0, 1.0, 3.0, 0.5, 0.0, 2.0, 1.0])
    single = WeightedDistributedSampler(weights, num_samples=20, seed=7)
    ranks = [
        WeightedDistributedSampler(weights, num_samples=10, num_replicas=2, rank=r, seed=7) for r in (0, 1)
    ]
    for epoch in (0, 1, 2):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        draw = list(single)
        shards = [list(s) for s in ranks]
        assert len(shards[0]) == len(shards[1]) == 10
        interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
        assert interleaved == draw  # the two ranks together are exactly the single-process draw
    for s in (single, *ranks):
        s.set_epoch(0)
    e0 = list(single)
    single.set_epoch(1)
    assert list(single) != e0  # a new draw every epoch


def test_sampler_follows_weights_and_never_draws_zero_weight():
    weights = torch.tensor([1.0, 0.0, 3.0])
    s = WeightedDistributedSampler(weights, num_samples=40000, seed=0)
    counts = np.bincount(list(s), minlength=3)
    assert counts[1] == 0
    assert counts[2] / counts[0] == pytest.approx(3.0, rel=0.05)


def test_sampler_uniform_then_weighted():
    s = WeightedDistributedSampler(None, num_items=4, seed=1)
    assert len(s) == 4 and set(list(s)) <= {0, 1, 2, 3}
    s.set_weights(torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert list(s) == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="expected 4 weights"):
        s.set_weights(torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        s.set_weights(torch.tensor([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="rank"):
        WeightedDistributedSampler(None, num_items=4, num_replicas=2, rank=2)


def test_sampler_is_a_distributed_sampler_so_lightning_does_not_rewrap():
    from torch.utils.data import DistributedSampler

    assert isinstance(WeightedDistributedSampler(None, num_items=3), DistributedSampler)
