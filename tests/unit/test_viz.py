import io

import numpy as np
import pytest
import torch

from facelit.viz import draw_overlay, figure_to_uint8, grid, plot_ced, to_uint8


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


def test_plot_ced_returns_agg_figure():
    fig = plot_ced({"ours": [0.01, 0.03, 0.09], "baseline": torch.tensor([0.02, 0.05, 0.07])}, thr=0.08)
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("ours (AUC") and labels[1].startswith("baseline (AUC")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    image = figure_to_uint8(fig)
    assert image.shape == (400, 500, 3) and image.dtype == np.uint8


def test_metrics_module_does_not_plot():
    """Plotting lives in facelit.viz; the metrics module is plain computation."""
    import facelit.metrics.landmarks as metrics

    assert not hasattr(metrics, "plot_ced")
    source = open(metrics.__file__).read()
    assert "matplotlib" not in source
