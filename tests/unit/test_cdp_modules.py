"""CDP modules: SphereFace with a pseudo-label head, the mediator MLP and its module, and the pipeline's
small helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from facelit.cluster.mediator_input import mediator_input_size
from facelit.nets.mediator import MediatorNet
from lightning_modules.cdp import CDPRecognitionModule, MediatorModule
from lightning_modules.sphereface import SphereFaceModule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from cdp_pipeline import Member, mediator_args, parse_args, precision_at_recall  # noqa: E402

NET = dict(backbone="sphere4", width=0.25, image_size=(32, 32), embedding_dim=16, num_identities=3)


def _batch(pseudo: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(4, 3, 32, 32, generator=g), "identity": torch.tensor([0, 2, 1, 4])}
    if pseudo:
        batch["pseudo"] = torch.tensor([False, False, True, True])
    return batch


def test_without_pseudo_head_it_is_sphereface():
    torch.manual_seed(0)
    cdp = CDPRecognitionModule(**NET)
    torch.manual_seed(0)
    plain = SphereFaceModule(**NET)
    batch = {"image": _batch(False)["image"], "identity": torch.tensor([0, 2, 1, 1])}
    assert torch.allclose(cdp.model_step(batch, "train")["loss"], plain.model_step(batch, "train")["loss"])
    assert cdp.pseudo_criterion is None


def _head_grads(
    module: CDPRecognitionModule, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    module.zero_grad()
    module.model_step(batch, "train")["loss"].backward()
    return module.criterion.weight.grad.clone(), module.pseudo_criterion.weight.grad.clone()


def test_two_heads_each_see_their_half():
    module = CDPRecognitionModule(
        num_pseudo_identities=5, pseudo_weight=0.5, **NET
    ).eval()  # eval: no BN mixing
    batch = _batch(True)
    out = module.model_step(batch, "train")
    assert torch.allclose(out["loss"], out["loss_labelled"] + 0.5 * out["loss_pseudo"])
    labelled_grad, pseudo_grad = _head_grads(module, batch)
    assert labelled_grad.abs().sum() > 0 and pseudo_grad.abs().sum() > 0
    changed = dict(batch, image=batch["image"].clone())
    changed["image"][2:] = torch.rand(2, 3, 32, 32)  # other pseudo-labelled images
    labelled_again, pseudo_again = _head_grads(module, changed)
    assert torch.allclose(labelled_grad, labelled_again) and not torch.allclose(pseudo_grad, pseudo_again)


def test_label_out_of_a_head_is_named():
    module = CDPRecognitionModule(num_pseudo_identities=4, **NET)
    with pytest.raises(ValueError, match="num_pseudo_identities 4"):
        module.training_step(_batch(True), 0)
    plain = CDPRecognitionModule(**NET)
    with pytest.raises(ValueError, match="num_pseudo_identities > 0"):
        plain.training_step(_batch(True), 0)


def test_pseudo_head_refuses_sharding():
    with pytest.raises(ValueError, match="shard_classifier"):
        CDPRecognitionModule(num_pseudo_identities=2, shard_classifier=True, **NET)


def test_mediator_net_width_and_shapes():
    net = MediatorNet(17)
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [51, 51, 1]  # two hidden layers of 3F, the official width
    assert net(torch.rand(8, 17)).shape == (8,)
    with pytest.raises(ValueError, match=r"\(B, 17\)"):
        net(torch.rand(8, 16))


def test_mediator_module_step_and_predict():
    module = MediatorModule(num_committee=2, structure="common_neighbours", hidden_dims=[8])
    width = mediator_input_size(2, "common_neighbours")
    assert width == 3 * 2 + 2
    batch = {
        "inputs": torch.rand(6, width),
        "target": torch.tensor([0.0, 1, 1, 0, 1, 0]),
        "index": torch.arange(6),
    }
    out = module.model_step(batch, "val")
    assert out["loss"] > 0 and out["positive_rate"] == 0.5
    scores = module.predict_step(batch, 0)["scores"]
    assert scores.shape == (6,) and bool(((scores > 0) & (scores < 1)).all())


def test_member_spec_parsing():
    member = Member.parse("r50:backbone=resnet50,seed=3,width=0.5")
    assert (
        member.name == "r50" and member.seed == 3 and member.model == {"backbone": "resnet50", "width": "0.5"}
    )
    with pytest.raises(ValueError, match="not key=value"):
        Member.parse("x:backbone")
    with pytest.raises(ValueError, match="other than base"):
        Member.parse("base:seed=1")


def test_precision_at_recall_reads_the_curve():
    curve = [
        {"pairwise_precision": 0.99, "pairwise_recall_all": 0.2},
        {"pairwise_precision": 0.9, "pairwise_recall_all": 0.5},
        {"pairwise_precision": 0.7, "pairwise_recall_all": 0.8},
    ]
    assert precision_at_recall(curve, 0.5) == 0.9
    assert precision_at_recall(curve, 0.6) == 0.7
    assert precision_at_recall(curve, 0.9) is None


def test_pipeline_arguments_reach_their_stage(tmp_path: Path):
    run, stages = parse_args(
        [
            "--out",
            str(tmp_path),
            "--mediator-override=--trainer.max_epochs=7",
            "--stages",
            "mediator",
            "--",
            "--trainer.max_steps=3",
        ]
    )
    assert stages == ["mediator"] and run.overrides == ["--trainer.max_steps=3"]
    assert mediator_args(run)[-1] == "--trainer.max_epochs=7"
    assert "--model.init_args.num_committee=2" in mediator_args(run)  # the default committee has 2 members
