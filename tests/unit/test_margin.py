"""Margin losses: closed forms, annealing state, boundaries, gradcheck, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facelit.losses.margin import (
    KIND_DEFAULT_M,
    MARGIN_KINDS,
    LambdaSchedule,
    MarginLoss,
    ShardedMarginLoss,
    asoftmax_psi,
    margin_logits,
    scale_gradient,
    shard_range,
)

KIND_M = KIND_DEFAULT_M


def test_lambda_schedule_official_values() -> None:
    sched = LambdaSchedule()
    assert sched(0) == 1000.0
    assert sched(100) == pytest.approx(1000.0 / 13.0)
    # 1000 / (1 + 0.12 i) reaches 5 at i = 199 / 0.12 = 1658.3
    assert sched(1658) > 5.0 and sched(1659) == 5.0 and sched(10**6) == 5.0


def test_psi_closed_form_at_sector_boundaries() -> None:
    theta = torch.tensor([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi], dtype=torch.float64)
    # m = 4: psi(k pi / 4) = (-1)^k cos(k pi) - 2k = 1 - 2k
    got = asoftmax_psi(torch.cos(theta), 4)
    assert torch.allclose(got, torch.tensor([1.0, -1.0, -3.0, -5.0, -7.0], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 1.5])
def test_psi_matches_definition_and_decreases(m: float) -> None:
    theta = torch.linspace(0.01, math.pi - 0.01, 400, dtype=torch.float64)
    k = torch.floor(m * theta / math.pi)
    expected = (-1.0) ** k * torch.cos(m * theta) - 2 * k
    got = asoftmax_psi(torch.cos(theta), m)
    assert torch.allclose(got, expected, atol=1e-9)
    assert (got[1:] < got[:-1]).all()


def _pair(theta: float, norm: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature at angle theta from class 0's weight (1, 0), class 1's weight (0, 1)."""
    x = norm * torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=torch.float64)
    return x, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)


def _loss(kind: str, **kw) -> MarginLoss:
    return MarginLoss(2, 2, kind=kind, m=kw.pop("m", KIND_M[kind]), **kw).double()


def test_asoftmax_target_logit_closed_form() -> None:
    theta, norm = 0.3, 3.0
    x, w = _pair(theta, norm)
    loss = _loss("asoftmax", m=2)
    loss.weight.data = w * 5.0  # normalised in the forward pass
    loss.iteration.fill_(100)  # lambda = 1000 / 13
    lam = 1000.0 / 13.0
    psi = math.cos(2 * theta)  # k = 0 for theta < pi / 2
    logits = loss.local_logits(x, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(norm * (lam * math.cos(theta) + psi) / (1 + lam))
    assert logits[0, 1].item() == pytest.approx(norm * math.cos(math.pi / 2 - theta))


def test_normalised_margins_closed_form() -> None:
    theta, s = 0.4, 10.0
    x, w = _pair(theta, 7.0)
    y = torch.tensor([0])
    for kind, m, target in [
        ("cosface", 0.35, s * (math.cos(theta) - 0.35)),
        ("arcface", 0.5, s * math.cos(theta + 0.5)),
        ("spherefacer", 1.5, s * math.cos(1.5 * theta)),
    ]:
        loss = _loss(kind, m=m, s=s)
        loss.weight.data = w.clone()
        logits = loss.local_logits(x, y)
        assert logits[0, 0].item() == pytest.approx(target), kind
        assert logits[0, 1].item() == pytest.approx(s * math.sin(theta)), kind


def test_arcface_fallback_beyond_pi_minus_m() -> None:
    m, s, theta = 0.5, 1.0, math.pi - 0.2  # theta + m > pi
    x, w = _pair(theta)
    loss = _loss("arcface", m=m, s=s)
    loss.weight.data = w
    t = loss.local_logits(x, torch.tensor([0]))[0, 0].item()
    assert t == pytest.approx(math.cos(theta) - m * math.sin(m))


def test_asoftmax_m1_is_normalised_weight_softmax() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 4, (6,))
    loss = MarginLoss(5, 4, kind="asoftmax", m=1).double()
    expected = x @ F.normalize(loss.weight, dim=1).t()
    for it in (0, 50, 10**5):
        loss.iteration.fill_(it)
        assert torch.allclose(loss.local_logits(x, y), expected)


def test_softmax_is_linear_layer() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(6, 5), torch.randint(0, 4, (6,))
    loss = MarginLoss(5, 4, kind="softmax")
    assert torch.allclose(loss(x, y), F.cross_entropy(x @ loss.weight.t() + loss.bias, y))


def test_spherefacer_gradient_is_that_of_plain_cosine() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 3, (5,))
    cos = F.normalize(x, dim=1) @ F.normalize(torch.randn(3, 4, dtype=torch.float64), dim=1).t()
    ones = torch.ones(5, dtype=torch.bool)
    out = margin_logits(cos, y, ones, torch.ones(5, dtype=torch.float64), "spherefacer", 1.5, 30.0, 0.0)
    (g,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    (ref,) = torch.autograd.grad((30.0 * cos).sum(), x)
    assert torch.allclose(g, ref)
    theta = torch.acos(cos[torch.arange(5), y].detach())
    assert torch.allclose(out[torch.arange(5), y], 30.0 * asoftmax_psi(torch.cos(theta), 1.5))


@pytest.mark.parametrize("kind", MARGIN_KINDS)
@pytest.mark.parametrize("theta", [0.0, math.pi])
def test_no_nan_at_theta_zero_and_pi(kind: str, theta: float) -> None:
    x, w = _pair(theta)
    x.requires_grad_(True)
    loss = _loss(kind)
    loss.weight.data = w
    value = loss(x, torch.tensor([0]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all() and torch.isfinite(loss.weight.grad).all()


@pytest.mark.parametrize("kind", [k for k in MARGIN_KINDS if k != "spherefacer"])
def test_gradcheck_float64(kind: str) -> None:
    """SphereFace-R's gradient is deliberately not the derivative of its forward value (checked
    against s cos(theta) above); every other kind is exact."""
    torch.manual_seed(1)
    loss = MarginLoss(4, 3, kind=kind, m=KIND_M[kind], s=4.0).double()
    loss.iteration.fill_(300)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = loss.weight.detach().clone().requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    params = (
        (lambda wb, bb: {"weight": wb, "bias": bb}) if kind == "softmax" else (lambda wb, bb: {"weight": wb})
    )
    assert torch.autograd.gradcheck(
        lambda a, wb, bb: torch.func.functional_call(loss, params(wb, bb), (a, y)), (x, w, b)
    )


def test_iteration_is_checkpointed_state() -> None:
    loss = MarginLoss(4, 3)
    for _ in range(7):
        loss.step()
    assert loss.lambda_value == pytest.approx(1000.0 / (1 + 0.12 * 7))
    state = loss.state_dict()
    assert int(state["iteration"]) == 7
    fresh = MarginLoss(4, 3)
    fresh.load_state_dict(state)
    assert fresh.lambda_value == loss.lambda_value


def test_asoftmax_margin_makes_target_harder() -> None:
    """With lambda small, the target logit of m = 4 is below the plain ||x|| cos(theta)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    plain = MarginLoss(6, 5, kind="asoftmax", m=1)
    margin = MarginLoss(6, 5, kind="asoftmax", m=4)
    margin.load_state_dict(plain.state_dict())
    margin.iteration.fill_(10**6)
    rows = torch.arange(8)
    assert (margin.local_logits(x, y)[rows, y] < plain.local_logits(x, y)[rows, y]).all()
    assert margin(x, y) > plain(x, y)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="integer in 1..4"):
        MarginLoss(4, 3, kind="asoftmax", m=5)
    with pytest.raises(ValueError, match="unknown margin kind"):
        MarginLoss(4, 3, kind="sphere")
    with pytest.raises(ValueError, match="arcface margin"):
        MarginLoss(4, 3, kind="arcface", m=1.5)
    loss = MarginLoss(4, 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        loss(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"features must be \(N, 4\)"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="holds no class"):
        ShardedMarginLoss(4, 5, rank=3, world_size=4)


def test_shard_range_covers_every_class_once() -> None:
    for c, w in [(10, 2), (11, 3), (1_000_000, 8)]:
        ranges = [shard_range(c, r, w) for r in range(w)]
        assert ranges[0][0] == 0 and ranges[-1][1] == c
        assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))


def test_scale_gradient() -> None:
    x = torch.ones(3, requires_grad=True)
    scale_gradient(x, 4.0).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 4.0))
