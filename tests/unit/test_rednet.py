"""RED-Net building blocks: unpooling wiring, label maps, class-balanced loss, decoding, the spatial
and temporal recurrences, the identity split and the regression sub-network."""

from __future__ import annotations

import math

import pytest
import torch

from facelit.losses.rednet import (
    class_balanced_cross_entropy,
    combine_detection_regression,
    decode_maps,
    label_maps,
    refine_in_window,
)
from facelit.nets.rednet import RedNet, SegNetDecoder, SegNetEncoder

TINY = dict(widths=(4, 8, 8, 8, 8), depths=(1, 1, 1, 1, 1), lstm_hidden=8, regression_width=8)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_net(num_identities: int = 0, points: int = 3) -> RedNet:
    return RedNet(points, 32, num_identities=num_identities, **TINY).eval()


# ---- encoder-decoder --------------------------------------------------------------------------
def test_decoder_unpools_at_the_encoder_switches() -> None:
    enc = SegNetEncoder(3, (4, 6), (1, 1))
    dec = SegNetDecoder((4, 6), (1, 1), 5)
    seen: list[torch.Tensor] = []
    dec.unpool.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    x = torch.randn(2, 3, 16, 16)
    code, indices, sizes, feats = enc(x)
    out = dec(code, indices, sizes)
    assert code.shape == (2, 6, 4, 4) and out.shape == (2, 5, 16, 16)
    assert [f.shape[-1] for f in feats] == [8, 4]
    # The first unpooling scatters the code to the last encoder stage's max positions, nowhere else.
    expected = torch.zeros(2, 6, 8 * 8).scatter(2, indices[-1].flatten(2), code.flatten(2)).view(2, 6, 8, 8)
    assert torch.equal(seen[0], expected)
    # Different switches (another image) give another decoding of the same code.
    _, other_indices, _, _ = enc(torch.randn(2, 3, 16, 16))
    assert not torch.allclose(dec(code, other_indices, sizes), out)


def test_image_size_must_allow_five_pools() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        RedNet(3, 48, **TINY)
    with pytest.raises(ValueError, match="32x32 crops"):
        tiny_net()(torch.rand(1, 2, 3, 64, 64))


# ---- label maps ---------------------------------------------------------------------------------
def test_label_squares_hand_computed() -> None:
    pts = torch.tensor([[[5.3, 2.7], [0.2, 7.9]]])
    labels = label_maps(pts, (8, 8), 3)
    expected = torch.zeros(8, 8, dtype=torch.long)
    expected[1:4, 4:7] = 1  # centre pixel (col 5, row 2), side 3
    expected[6:8, 0:2] = 2  # centre pixel (col 0, row 7), clipped at the border
    assert torch.equal(labels[0], expected)
    assert label_maps(pts, (8, 8), 1)[0].nonzero().tolist() == [[2, 5], [7, 0]]


def test_label_overlap_goes_to_the_nearest_centre_and_invisible_choice() -> None:
    pts = torch.tensor([[[2.5, 2.5], [4.5, 2.5]]])  # centre pixels cols 2 and 4, row 2
    labels = label_maps(pts, (5, 7), 5)[0]
    assert labels[2, 2] == 1 and labels[2, 4] == 2
    assert labels[2, 1] == 1 and labels[2, 5] == 2
    assert labels[2, 3] == 1  # equidistant: the lower index
    vis = torch.tensor([[True, False]])
    assert (label_maps(pts, (5, 7), 5, vis)[0] == 2).any()  # labelled by default
    assert not (label_maps(pts, (5, 7), 5, vis, label_invisible=False)[0] == 2).any()
    with pytest.raises(ValueError, match="odd"):
        label_maps(pts, (5, 7), 4)


# ---- class-balanced loss ----------------------------------------------------------------------
def test_class_balanced_loss_weighs_classes_equally() -> None:
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = 1
    logits = torch.zeros(1, 3, 4, 4)
    assert class_balanced_cross_entropy(logits, labels).item() == pytest.approx(math.log(3))
    # Background pixels all right (CE a), the single landmark pixel wrong (CE b): (a + b) / 2,
    # whatever the 15:1 pixel ratio.
    logits[0, 0] = 5.0
    a = -torch.log_softmax(torch.tensor([5.0, 0.0, 0.0]), 0)[0].item()
    b = -torch.log_softmax(torch.tensor([5.0, 0.0, 0.0]), 0)[1].item()
    assert class_balanced_cross_entropy(logits, labels).item() == pytest.approx((a + b) / 2, rel=1e-5)


def test_class_balanced_loss_ignores_masked_frames() -> None:
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    logits = torch.zeros(2, 3, 4, 4)
    logits[1] = torch.randn(3, 4, 4) * 10
    keep_first = torch.tensor([True, False])
    assert class_balanced_cross_entropy(logits, labels, keep_first).item() == pytest.approx(math.log(3))


# ---- decoding -----------------------------------------------------------------------------------
def test_decode_recovers_square_centres_and_falls_back_to_the_peak() -> None:
    pts = torch.tensor([[[10.2, 5.9], [20.7, 25.1], [3.0, 3.0]]])
    labels = label_maps(pts[:, :2], (32, 32), 5)
    logits = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float() * 10.0
    logits[0, 3, 8, 30] = 12.0  # class 3 wins no pixel of the merged map, but peaks at (col 30, row 8)
    logits[0, 0, 8, 30] = 20.0
    points, conf = decode_maps(logits)
    assert torch.allclose(points[0, :2], torch.tensor([[10.5, 5.5], [20.5, 25.5]]))
    assert torch.allclose(points[0, 2], torch.tensor([30.5, 8.5]))
    assert conf[0, 0] > 0.99 and conf[0, 2] < 0.01
    reg = torch.zeros(1, 3, 2)
    combined = combine_detection_regression(points, conf, reg, 0.5)
    assert torch.equal(combined[0, :2], points[0, :2]) and torch.equal(combined[0, 2], reg[0, 2])



def test_window_refinement_hand_computed_ignores_a_confident_peak_outside() -> None:
    logits = torch.full((1, 2, 16, 32), -30.0)
    logits[:, 0] = 0.0  # background
    logits[0, 1, 5, 10] = logits[0, 1, 5, 11] = 0.0  # probability 1/2 at (col 10, row 5) and (col 11, row 5)
    logits[0, 1, 8, 30] = 30.0  # a confident peak far from the anchor
    anchor = torch.tensor([[[10.8, 5.2]]])
    # window: pixel centres within 1.5 px of the anchor, cols 9-11 and rows 4-6
    refined = refine_in_window(logits, anchor, 1.5)
    assert torch.allclose(refined, torch.tensor([[[11.0, 5.5]]]), atol=1e-4)
    points, conf = decode_maps(logits)  # the threshold rule keeps the far peak
    kept = combine_detection_regression(points, conf, anchor, 0.5)
    assert torch.allclose(kept, torch.tensor([[[30.5, 8.5]]]))
    outside = torch.tensor([[[-50.0, -50.0]]])
    assert torch.equal(refine_in_window(logits, outside, 1.5), outside)
    with pytest.raises(ValueError, match="half-width"):
        refine_in_window(logits, anchor, 0.0)
    with pytest.raises(ValueError, match="do not match"):
        refine_in_window(logits, torch.zeros(1, 2, 2), 1.5)

# ---- recurrences, identity, regression ----------------------------------------------------------
def test_spatial_recurrence_feeds_back_the_previous_maps() -> None:
    net = tiny_net()
    x = torch.rand(1, 2, 3, 32, 32)
    one, three = net(x, steps=1), net(x, steps=3)
    assert len(three["logits"]) == 3 and three["logits"][0].shape == (1, 2, 4, 32, 32)
    assert torch.allclose(one["logits"][0], three["logits"][0])
    assert not torch.allclose(three["logits"][0], three["logits"][1])


def test_temporal_recurrence_is_causal_and_frame_mode_has_no_carry() -> None:
    net = tiny_net()
    with torch.no_grad():  # a visible LSTM contribution (the output projection starts at zero)
        net.bottleneck.project_out.weight.normal_(0, 0.5)
    x = torch.rand(1, 4, 3, 32, 32)
    y = x.clone()
    y[:, 0] = torch.rand(3, 32, 32)
    for temporal in (True, False):
        a, b = net(x, temporal=temporal, steps=2), net(y, temporal=temporal, steps=2)
        later_changed = not torch.allclose(a["logits"][-1][:, 2], b["logits"][-1][:, 2])
        assert later_changed == temporal
    z = x.clone()
    z[:, 3] = torch.rand(3, 32, 32)  # the future never changes the past
    assert torch.allclose(net(x, steps=2)["logits"][-1][:, :3], net(z, steps=2)["logits"][-1][:, :3])


def test_online_state_equals_the_whole_clip() -> None:
    net = tiny_net()
    with torch.no_grad():
        net.bottleneck.project_out.weight.normal_(0, 0.5)
    x = torch.rand(1, 3, 3, 32, 32)
    whole = net(x, steps=2)
    state, frames = None, []
    for t in range(3):
        out = net(x[:, t : t + 1], steps=2, state=state)
        state = out["state"]
        frames.append(out["logits"][-1])
    assert torch.allclose(torch.cat(frames, 1), whole["logits"][-1], atol=1e-5)


def test_identity_code_is_the_clip_mean_of_valid_frames() -> None:
    net = tiny_net(num_identities=5)
    x = torch.rand(2, 3, 3, 32, 32)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    temporal = net(x, mask, steps=1)["identity_logits"]
    frame = net(x, mask, steps=1, temporal=False)["identity_logits"]
    assert temporal.shape == (2, 5) and torch.allclose(temporal, frame, atol=1e-5)
    y = x.clone()
    y[1, 2] = torch.rand(3, 32, 32)  # a padding frame does not count
    assert torch.allclose(net(y, mask, steps=1)["identity_logits"][1], temporal[1], atol=1e-6)
    assert tiny_net()(x)["identity_logits"] is None


def test_regression_starts_at_the_mean_shape() -> None:
    net = tiny_net(points=2)
    shape = torch.tensor([[0.3, 0.4], [0.7, 0.4]])
    net.set_mean_shape(shape)
    reg = net(torch.rand(2, 2, 3, 32, 32))["regression"]
    assert reg[-1].shape == (2, 2, 2, 2)
    assert torch.allclose(reg[-1], (shape * 32).expand(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        net.set_mean_shape(torch.zeros(3, 2))
