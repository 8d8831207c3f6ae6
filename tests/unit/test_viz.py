import numpy as np
import pytest
import torch

from facelit.viz import draw_overlay, grid, to_uint8


def test_overlay_draws_gt_red_and_predictions_green_where_asked():
    image = torch.zeros(3, 40, 60)
    out = draw_overlay(image, {"boxes": torch.tensor([[5.0, 5.0, 20.0, 30.0]]),
                               "gt_landmarks": torch.tensor([[[40.0, 20.0]]])})
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert tuple(out[5, 10]) == (0, 255, 0)  # top edge of the predicted box
    assert out[20, 40, 0] == 255 and out[20, 40, 1] < 100  # gt point in red
    assert out[35, 55].sum() == 0


def test_overlay_scale_and_grid_and_bad_shape():
    out = draw_overlay(torch.rand(3, 8, 8), {"landmarks": torch.tensor([[4.0, 4.0]])}, scale=4)
    assert out.shape == (32, 32, 3)
    g = grid([out, out, out], columns=2, pad=1)
    assert g.shape == (2 * 33 + 1, 2 * 33 + 1, 3)
    with pytest.raises(ValueError):
        to_uint8(torch.rand(8, 8))
