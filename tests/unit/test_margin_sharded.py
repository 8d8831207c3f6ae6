"""Sharded classifier over 2 gloo CPU processes: loss and gradients equal the single-process ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facelit.losses.margin import KIND_DEFAULT_M, MARGIN_KINDS, MarginLoss, ShardedMarginLoss, shard_range

WORLD, PER_RANK, DIM, CLASSES = 2, 6, 8, 11  # 11 classes: unequal shards (6 + 5)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * PER_RANK, DIM, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (WORLD * PER_RANK,), generator=g)
    y[:CLASSES] = torch.arange(CLASSES)  # every shard holds targets
    torch.manual_seed(0)  # the same classifier weights in every process
    states = {
        kind: MarginLoss(DIM, CLASSES, kind=kind, m=KIND_DEFAULT_M[kind], s=8.0).double().state_dict()
        for kind in MARGIN_KINDS
    }
    for state in states.values():
        state["iteration"].fill_(400)
    return x, y, states


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y, states = _inputs()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        start, stop = shard_range(CLASSES, rank, WORLD)
        results = {}
        for kind, state in states.items():
            loss = ShardedMarginLoss(
                DIM, CLASSES, rank, WORLD, kind=kind, m=KIND_DEFAULT_M[kind], s=8.0
            ).double()
            shard = {k: (v[start:stop] if k in ("weight", "bias") else v) for k, v in state.items()}
            loss.load_state_dict(shard)
            feats = x[rows].clone().requires_grad_(True)
            value = loss(feats, y[rows])
            value.backward()
            results[kind] = {
                "loss": value.detach(),
                "x_grad": feats.grad,
                "w_grad": loss.weight.grad,
                "b_grad": None if loss.bias is None else loss.bias.grad,
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_sharded_loss_and_gradients_equal_single_process(tmp_path: Path) -> None:
    torch.multiprocessing.start_processes(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn"
    )
    x, y, states = _inputs()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for kind, state in states.items():
        ref = MarginLoss(DIM, CLASSES, kind=kind, m=KIND_DEFAULT_M[kind], s=8.0).double()
        ref.load_state_dict(state)
        feats = x.clone().requires_grad_(True)
        value = ref(feats, y)
        value.backward()
        for r, got in enumerate(ranks):
            start, stop = shard_range(CLASSES, r, WORLD)
            g = got[kind]
            assert torch.allclose(g["loss"], value.detach(), atol=1e-12), (kind, r)
            assert torch.allclose(g["x_grad"], feats.grad[r * PER_RANK : (r + 1) * PER_RANK], atol=1e-12), (
                kind
            )
            assert torch.allclose(g["w_grad"], ref.weight.grad[start:stop], atol=1e-12), (kind, r)
            if ref.bias is not None:
                assert torch.allclose(g["b_grad"], ref.bias.grad[start:stop], atol=1e-12), kind
