import pytest
import torch

from lightning_modules.base import build_optimizer, build_scheduler


def test_multistep_scheduler_with_warmup_follows_retinaface_recipe():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], "sgd", lr=1.0, weight_decay=5e-4, momentum=0.9)
    sched = build_scheduler(opt, "multistep", total_steps=80, warmup_steps=5, milestones=(55 / 80, 68 / 80))
    lrs = []
    for _ in range(80):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)
    assert lrs[54] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.1) and lrs[68] == pytest.approx(0.01)


def test_cosine_decays_to_zero_and_bad_names_raise():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], "adamw", lr=1.0, weight_decay=0.0, momentum=0.0)
    sched = build_scheduler(opt, "cosine", total_steps=10)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert build_scheduler(opt, "none", total_steps=10) is None
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer([p], "lbfgs", 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="scheduler"):
        build_scheduler(opt, "poly", total_steps=10)
