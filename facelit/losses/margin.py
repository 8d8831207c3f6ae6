"""Margin-based classification losses for face recognition: A-Softmax (SphereFace), plain softmax,
CosFace, ArcFace and SphereFace-R, one interface, optionally sharded over DDP ranks.

Convention
----------
Features x are (B, D) embeddings, the classifier weight W is (C, D) (one row per identity), labels
are (B,) int64 in [0, C). ``cos`` is cos(theta_j) = <x, W_j> / (||x|| ||W_j||) for every class j.
Per kind, the non-target logits and the target logit (class y) are:

- ``softmax``: x W^T + b (plain fully connected layer with bias, nothing normalised).
- ``asoftmax`` (SphereFace): W normalised, no bias, x not normalised. Non-target ||x|| cos(theta_j);
  target (lambda ||x|| cos(theta_y) + ||x|| psi(theta_y)) / (1 + lambda) with
  psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi / m, (k + 1) pi / m], integer m in 1..4.
  cos(m theta) is the Chebyshev polynomial T_m(cos theta) and k comes from the detached angle, as in
  the official Caffe layer, so gradients stay finite at theta = 0 and theta = pi.
  lambda = max(lambda_min, base (1 + gamma * iteration)^(-power)) (official: 1000, 0.12, 1, 5);
  ``iteration`` is a buffer (saved in checkpoints) advanced by :meth:`MarginLoss.step` once per
  optimizer step. m = 1 is the "modified softmax" (normalised weights, no bias).
- ``cosface``: x and W normalised; s cos(theta_j), target s (cos(theta_y) - m).
- ``arcface``: x and W normalised; target s cos(theta_y + m) where theta_y + m <= pi, otherwise
  s (cos(theta_y) - m sin(m)) (insightface's fallback that keeps the target logit monotone).
- ``spherefacer`` (SphereFace-R, characteristic gradient detachment): x and W normalised; target
  s (cos(theta_y) + detach(psi_m(theta_y) - cos(theta_y))): the forward value has the multiplicative
  margin psi_m (any real m >= 1), the gradient is that of s cos(theta_y).

Sharding (:class:`ShardedMarginLoss`): rank r holds the classes ``shard_range(C, r, world)``;
features and labels are all-gathered, each rank computes its (N, C_r) logits, and the softmax over
all C classes is exact (all-reduced row max and sum of exponentials), as Partial FC without
sampling. The loss equals the single-process loss over the N gathered samples and the gradients
of each rank's features and weight shard are exactly the single-process gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MARGIN_KINDS",
    "KIND_DEFAULT_M",
    "KIND_DEFAULT_S",
    "MarginKind",
    "LambdaSchedule",
    "MarginLoss",
    "ShardedMarginLoss",
    "asoftmax_psi",
    "margin_logits",
    "scale_gradient",
    "gather_shards",
    "shard_range",
]

MarginKind = Literal["softmax", "asoftmax", "cosface", "arcface", "spherefacer"]
MARGIN_KINDS: tuple[str, ...] = ("softmax", "asoftmax", "cosface", "arcface", "spherefacer")
KIND_DEFAULT_M: dict[str, float] = {
    "softmax": 0.0,
    "asoftmax": 4.0,
    "cosface": 0.35,
    "arcface": 0.5,
    "spherefacer": 1.5,
}
"""Published margins: SphereFace m = 4, CosFace 0.35, ArcFace 0.5 rad, SphereFace-R 1.5."""
KIND_DEFAULT_S: dict[str, float] = {
    "softmax": 1.0,
    "asoftmax": 1.0,
    "cosface": 64.0,
    "arcface": 64.0,
    "spherefacer": 30.0,
}
"""Published scales of the normalised kinds (unused by softmax and A-Softmax)."""
_COS_EPS = 1e-7  # keeps sqrt(1 - cos^2) and acos differentiable at theta = 0 and pi
_NORM_EPS = 1e-12


@dataclass(frozen=True)
class LambdaSchedule:
    """A-Softmax annealing: lambda = max(minimum, base * (1 + gamma * iteration) ** (-power)).

    Defaults are the official SphereFace values (``base 1000, gamma 0.12, power 1, lambda_min 5``).
    """

    base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    minimum: float = 5.0

    def __call__(self, iteration: int) -> float:
        return max(self.minimum, self.base * (1.0 + self.gamma * float(iteration)) ** (-self.power))


def _chebyshev(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m theta) as the polynomial T_m(cos theta), m in 1..4."""
    if m == 1:
        return cos
    if m == 2:
        return 2 * cos**2 - 1
    if m == 3:
        return (4 * cos**2 - 3) * cos
    if m == 4:
        c2 = cos**2
        return 8 * c2 * c2 - 8 * c2 + 1
    raise ValueError(f"A-Softmax margin m must be an integer in 1..4, got {m}")


def asoftmax_psi(cos: torch.Tensor, m: float) -> torch.Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k, theta = acos(cos) in [k pi / m, (k + 1) pi / m].

    Integer m in 1..4 use the Chebyshev form (differentiable everywhere in [-1, 1]); a real m
    (SphereFace-R) uses acos and is meant for detached inputs. psi is continuous and decreasing
    from 1 (theta = 0) to 1 - 2m (theta = pi, integer m).

    Args:
        cos: (...) cosines, clamped to [-1, 1].
    """
    cos = cos.clamp(-1.0, 1.0)
    theta = torch.acos(cos.detach().clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS))
    k_max = math.ceil(m) - 1
    k = torch.floor(m * theta / math.pi).clamp(0, k_max)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    if float(m).is_integer() and 1 <= m <= 4:
        cos_m = _chebyshev(cos, int(m))
    else:
        cos_m = torch.cos(m * torch.acos(cos.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS)))
    return sign * cos_m - 2.0 * k


def margin_logits(
    cos: torch.Tensor,
    target: torch.Tensor,
    has_target: torch.Tensor,
    norm: torch.Tensor,
    kind: MarginKind,
    m: float,
    s: float,
    lam: float,
) -> torch.Tensor:
    """Logits of the normalised kinds from cosines, with the margin on each row's target class.

    Args:
        cos: (N, C) cosines between features and (normalised) class weights.
        target: (N,) int64 column of each row's target class (only read where ``has_target``).
        has_target: (N,) bool; False where the target class is not among these columns (sharding).
        norm: (N,) feature norms (the A-Softmax scale).
        kind: ``asoftmax`` | ``cosface`` | ``arcface`` | ``spherefacer``.
        m, s: margin and scale (``s`` unused by A-Softmax).
        lam: A-Softmax lambda.

    Returns:
        (N, C) logits.
    """
    cos = cos.clamp(-1.0, 1.0)
    rows = has_target.nonzero().squeeze(1)
    cols = target.index_select(0, rows)
    c = cos[rows, cols]
    if kind == "asoftmax":
        n = norm.index_select(0, rows)
        logits = cos * norm[:, None]
        t = n * (lam * c + asoftmax_psi(c, m)) / (1.0 + lam)
    else:
        logits = cos * s
        if kind == "cosface":
            t = s * (c - m)
        elif kind == "arcface":
            sin = torch.sqrt((1.0 - c * c).clamp_min(_COS_EPS))
            t = s * torch.where(
                c > math.cos(math.pi - m), c * math.cos(m) - sin * math.sin(m), c - m * math.sin(m)
            )
        elif kind == "spherefacer":
            cd = c.detach()
            t = s * (c + (asoftmax_psi(cd, m) - cd))
        else:
            raise ValueError(f"margin_logits: unknown kind {kind!r}; use one of {MARGIN_KINDS[1:]}")
    return logits.index_put((rows, cols), t)


class MarginLoss(nn.Module):
    """Classifier + margin softmax loss over (a range of) the identities.

    Args:
        embedding_dim: D, the feature size.
        num_classes: C, identities in the training set.
        kind: ``softmax`` | ``asoftmax`` | ``cosface`` | ``arcface`` | ``spherefacer``.
        m: margin (A-Softmax: integer 1..4; CosFace 0.35; ArcFace 0.5 rad; SphereFace-R 1.5).
        s: scale of the normalised kinds (CosFace/ArcFace 64; SphereFace-R 30).
        lambda_base, lambda_gamma, lambda_power, lambda_min: A-Softmax annealing (official values).
        class_range: ``(start, stop)`` classes this module holds (a shard); all C by default.

    Buffers: ``iteration`` (int64), the optimizer steps taken, so lambda resumes with the checkpoint.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        kind: MarginKind = "asoftmax",
        m: float = 4.0,
        s: float = 64.0,
        lambda_base: float = 1000.0,
        lambda_gamma: float = 0.12,
        lambda_power: float = 1.0,
        lambda_min: float = 5.0,
        class_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if kind not in MARGIN_KINDS:
            raise ValueError(f"unknown margin kind {kind!r}; use one of {MARGIN_KINDS}")
        if kind == "asoftmax" and not (float(m).is_integer() and 1 <= m <= 4):
            raise ValueError(f"A-Softmax margin m must be an integer in 1..4, got {m}")
        if kind == "spherefacer" and m < 1:
            raise ValueError(f"SphereFace-R margin m must be >= 1, got {m}")
        if kind in ("cosface", "arcface") and not 0 <= m < 1:
            raise ValueError(f"{kind} margin m must be in [0, 1), got {m}")
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(
                f"embedding_dim and num_classes must be >= 1, got {embedding_dim}, {num_classes}"
            )
        start, stop = class_range if class_range is not None else (0, num_classes)
        if not 0 <= start <= stop <= num_classes:
            raise ValueError(f"class_range {class_range} is not inside [0, {num_classes}]")
        self.embedding_dim, self.num_classes, self.kind = int(embedding_dim), int(num_classes), kind
        self.m, self.s = float(m), float(s)
        self.schedule = LambdaSchedule(lambda_base, lambda_gamma, lambda_power, lambda_min)
        self.class_start, self.class_stop = int(start), int(stop)
        self.weight = nn.Parameter(torch.randn(stop - start, embedding_dim) * math.sqrt(2.0 / embedding_dim))
        self.bias = nn.Parameter(torch.zeros(stop - start)) if kind == "softmax" else None
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def settings(self) -> dict[str, Any]:
        """The margin's keyword arguments (kind, m, s, lambda annealing), to build a head of the same
        loss over another label space or a shard of this one: ``MarginLoss(D, C2, **head.settings())``."""
        sch = self.schedule
        return {"kind": self.kind, "m": self.m, "s": self.s, "lambda_base": sch.base,
                "lambda_gamma": sch.gamma, "lambda_power": sch.power, "lambda_min": sch.minimum}  # fmt: skip

    @property
    def lambda_value(self) -> float:
        """The current A-Softmax lambda (after ``iteration`` optimizer steps)."""
        return self.schedule(int(self.iteration))

    def step(self) -> None:
        """Advance the annealing by one optimizer step."""
        self.iteration += 1

    def local_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, C_local) logits of this module's classes for (N, D) ``features`` and (N,) global labels."""
        if features.dim() != 2 or features.shape[1] != self.embedding_dim:
            raise ValueError(f"features must be (N, {self.embedding_dim}), got {tuple(features.shape)}")
        if self.kind == "softmax":
            return F.linear(features, self.weight, self.bias)
        w = F.normalize(self.weight, dim=1, eps=_NORM_EPS)
        norm = features.norm(dim=1)
        unit = features / norm.clamp_min(_NORM_EPS)[:, None]
        cos = unit @ w.t()
        local = labels - self.class_start
        has_target = (labels >= self.class_start) & (labels < self.class_stop)
        return margin_logits(
            cos,
            local.clamp(0, max(0, cos.shape[1] - 1)),
            has_target,
            norm,
            self.kind,
            self.m,
            self.s,
            self.lambda_value,
        )

    def _check_labels(self, labels: torch.Tensor, n: int) -> None:
        if labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the margin logits. features (N, D), labels (N,) -> scalar."""
        self._check_labels(labels, features.shape[0])
        if (self.class_start, self.class_stop) != (0, self.num_classes):
            raise RuntimeError("a class shard needs ShardedMarginLoss (its softmax spans the other ranks)")
        return F.cross_entropy(self.local_logits(features, labels), labels)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, m={self.m}, s={self.s}, classes=[{self.class_start}, {self.class_stop}) "
            f"of {self.num_classes}, dim={self.embedding_dim}"
        )


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Classes ``[start, stop)`` held by ``rank``: contiguous shards of ceil(C / world) classes."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    per = -(-num_classes // world_size)
    return min(num_classes, rank * per), min(num_classes, (rank + 1) * per)


class _GatherExact(torch.autograd.Function):
    """all_gather along dim 0; backward sums every rank's gradient and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size(group)
        ctx.group, ctx.rank, ctx.n = group, dist.get_rank(group), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


class _SumExact(torch.autograd.Function):
    """all_reduce(sum) whose result feeds a loss computed identically on every rank: the gradient of
    that one loss w.r.t. each rank's summand is the gradient w.r.t. the sum (identity backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward, gradient times ``factor``. With a sharded loss the backbone sees the exact
    gradient of the global loss through its own samples only; DDP then averages over ranks, so pass
    the features through ``scale_gradient(features, world_size)`` to recover the exact sum."""
    return _ScaleGrad.apply(x, float(factor))


class ShardedMarginLoss(MarginLoss):
    """:class:`MarginLoss` whose classifier is split over the ranks of ``group`` (exact softmax).

    Each rank passes its own (B, D) features and (B,) labels (B equal on every rank); the returned
    loss is the mean over the world's N = B * world samples, identical on every rank. Gradients of
    the local features and of the local weight shard equal the single-process gradients of that loss.
    The weight shard must be excluded from DDP's gradient averaging (it differs per rank).
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, rank: int, world_size: int, group=None, **kwargs
    ) -> None:
        super().__init__(
            embedding_dim, num_classes, class_range=shard_range(num_classes, rank, world_size), **kwargs
        )
        if self.class_stop == self.class_start:
            raise ValueError(f"rank {rank} of {world_size} holds no class of {num_classes}: use fewer ranks")
        self.rank, self.world_size, self.group = int(rank), int(world_size), group

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = torch.tensor([features.shape[0]], device=features.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n, group=self.group)
        if len({int(t) for t in sizes}) != 1:
            raise ValueError(
                f"ShardedMarginLoss needs equal batch sizes on every rank, got {[int(t) for t in sizes]}"
            )
        self._check_labels(labels, features.shape[0])
        all_features = _GatherExact.apply(features, self.group)
        all_labels = _GatherExact.apply(labels, self.group)
        logits = self.local_logits(all_features, all_labels)  # (N, C_local)
        row_max = logits.detach().amax(dim=1)
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=self.group)
        sum_exp = _SumExact.apply(torch.exp(logits - row_max[:, None]).sum(dim=1), self.group)
        local = all_labels - self.class_start
        has_target = (all_labels >= self.class_start) & (all_labels < self.class_stop)
        picked = logits.gather(1, local.clamp(0, max(0, logits.shape[1] - 1))[:, None]).squeeze(1)
        target = _SumExact.apply(torch.where(has_target, picked, torch.zeros_like(picked)), self.group)
        return (torch.log(sum_exp) + row_max - target).mean()


def gather_shards(tensor: torch.Tensor, loss: ShardedMarginLoss) -> torch.Tensor:
    """The full (C, ...) parameter from every rank's (C_r, ...) shard of ``loss`` (a collective)."""
    per = -(-loss.num_classes // loss.world_size)
    padded = tensor.new_zeros((per, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(loss.world_size)]
    dist.all_gather(parts, padded, group=loss.group)
    return torch.cat(
        [
            p[: b - a]
            for p, (a, b) in zip(
                parts,
                (shard_range(loss.num_classes, r, loss.world_size) for r in range(loss.world_size)),
                strict=True,
            )
        ]
    )
