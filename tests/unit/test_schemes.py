import pytest
import torch

from facelit.geometry.schemes import (
    AFLW19,
    AFLW21,
    ANIMAL5,
    FIVE_POINT,
    IBUG68,
    LandmarkScheme,
    get_scheme,
    subset_from_ibug68,
)


@pytest.mark.parametrize("scheme", [IBUG68, FIVE_POINT, AFLW21, AFLW19, ANIMAL5])
def test_flip_perm_is_involution_and_pairs_left_with_right(scheme):
    perm = scheme.flip_tensor()
    assert torch.equal(perm[perm], torch.arange(scheme.num_points))
    for i, j in enumerate(scheme.flip_perm):
        a, b = scheme.point_names[i], scheme.point_names[j]
        if i == j:
            assert "left" not in a and "right" not in a, a
        elif "left" in a or "right" in a:
            swapped = b.replace("right", "X").replace("left", "right").replace("X", "left")
            assert a.rstrip("0123456789") == swapped.rstrip("0123456789"), (a, b)


def test_ibug68_symmetric_pairs_and_five_point_spec():
    assert IBUG68.num_points == 68
    assert IBUG68.flip_perm[36] == 45 and IBUG68.flip_perm[48] == 54 and IBUG68.flip_perm[8] == 8
    assert list(FIVE_POINT.flip_perm) == [1, 0, 2, 4, 3]
    assert AFLW19.num_points == 19 and AFLW21.num_points == 21
    assert "left_ear" not in AFLW19.point_names


def test_subset_from_ibug68_averages_and_rejects_ears():
    pts = torch.arange(68 * 2, dtype=torch.float64).reshape(68, 2)
    five = subset_from_ibug68(pts[None], FIVE_POINT)[0]
    assert torch.allclose(five[0], pts[36:42].mean(0))
    assert torch.allclose(five[2], pts[30])
    nineteen = subset_from_ibug68(pts, AFLW19)
    assert nineteen.shape == (19, 2)
    with pytest.raises(ValueError, match="left_ear"):
        subset_from_ibug68(pts, AFLW21)
    with pytest.raises(ValueError, match="68"):
        subset_from_ibug68(pts[:5], FIVE_POINT)


def test_flip_of_symmetric_face_maps_points_onto_partners():
    # A face symmetric about x = W/2: flipping x' = W - x then permuting must give the same points.
    W = 100.0
    half = torch.rand(68, 2, dtype=torch.float64) * 40
    pts = torch.empty(68, 2, dtype=torch.float64)
    for i, j in enumerate(IBUG68.flip_perm):
        if i <= j:
            pts[i] = half[i]
            pts[j] = torch.stack([W - half[i, 0], half[i, 1]])
            if i == j:
                pts[i, 0] = W / 2
    flipped = pts.clone()
    flipped[:, 0] = W - flipped[:, 0]
    assert torch.allclose(flipped[IBUG68.flip_tensor()], pts)


def test_bad_scheme_definitions_and_lookup():
    with pytest.raises(ValueError, match="permutation"):
        LandmarkScheme("bad", ("a", "b"), (0, 0))
    with pytest.raises(ValueError, match="involution"):
        LandmarkScheme("bad", ("a", "b", "c"), (1, 2, 0))
    with pytest.raises(KeyError, match="known"):
        get_scheme("nope")
    assert get_scheme("aflw19") is AFLW19
    assert FIVE_POINT.index("nose_tip") == 2
