"""Tests of the synthetic face world (facelit.synth): contracts, determinism, label/pixel agreement."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from facelit.batch import collate_crops, collate_detections
from facelit.synth import (
    DOMAINS,
    FaceCropDataset,
    HeadModel,
    SceneDataset,
    head_model,
    render_crop,
    render_scene,
)
from facelit.synth.raster import rasterize
from facelit.synth.world import render_crops, render_scenes


@pytest.fixture(scope="module")
def human() -> HeadModel:
    return head_model("human")


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The renderer is built for DataLoader workers (one thread each); intra-op threads only add
    overhead to its many small ops, badly so on a loaded CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frontal(vertices: torch.Tensor) -> torch.Tensor:
    return vertices[:, :2]


# ----------------------------------------------------------------------------------- head model
def test_head_model_api(human: HeadModel) -> None:
    assert head_model("human") is not human and torch.equal(head_model("human").vertices, human.vertices)
    v, f = human.vertices, human.faces
    assert v.dtype == torch.float32 and v.shape[1] == 3 and v.shape[0] >= 500
    assert f.dtype == torch.int64 and f.shape[1] == 3 and int(f.min()) >= 0 and int(f.max()) < v.shape[0]
    assert human.landmark_index.dtype == torch.int64 and human.landmark_index.shape == (68,)
    assert human.nose_tip_index == int(human.landmark_index[30])
    assert set(human.extra_points) == {"left_ear", "right_ear"}
    # closed, outward-oriented surface: positive volume
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = (a * torch.linalg.cross(b, c)).sum() / 6
    assert volume > 5.0
    # iBUG semantics in the head frame (x right, y down): image-left eye is 36-41, chin is lowest
    lm = v[human.landmark_index]
    assert lm[36:42, 0].mean() < 0 < lm[42:48, 0].mean()
    assert lm[8, 1] == lm[:, 1].max()
    assert lm[30, 2] == lm[:, 2].min()  # the nose tip is the most forward landmark
    assert human.extra_points["left_ear"][0] < lm[0, 0] and human.extra_points["right_ear"][0] > lm[16, 0]


@pytest.mark.parametrize("species", ["human", "horse", "sheep"])
def test_meshes_are_mirror_symmetric(species: str) -> None:
    """Horizontal flips of mesh labels need a vertex mirror map; landmarks map by the scheme's flip."""
    from facelit.geometry.mirror import mirror_permutation

    model = head_model(species)
    perm = mirror_permutation(model.vertices)
    flip = model.scheme.flip_tensor()
    assert torch.equal(perm[model.landmark_index], model.landmark_index[flip])
    if species == "human":
        left, right = model.extra_index["left_ear"], model.extra_index["right_ear"]
        assert int(perm[left]) == right


def test_unknown_names_raise_listing_known() -> None:
    with pytest.raises(ValueError, match="source"):
        render_crop(0, 0, 32, domain="nope")
    with pytest.raises(ValueError, match="horse"):
        head_model("cat")
    with pytest.raises(ValueError, match="ibug68"):
        render_crop(0, 0, 32, scheme="animal5")
    with pytest.raises(ValueError, match="animal5"):
        render_crop(0, 0, 32, species="horse", scheme="ibug68")
    with pytest.raises(ValueError, match="size"):
        render_crop(0, 0, 8)


# ----------------------------------------------------------------------------------- rasteriser
def test_rasterizer_coverage_depth_and_clip() -> None:
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(12) + 0.5, torch.arange(12) + 0.5, indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], 1)
    for _ in range(30):
        p = torch.rand(3, 2, generator=g) * 14 - 1
        e1, e2 = p[1] - p[0], p[2] - p[0]
        tri = torch.tensor([[0, 1, 2]]) if e1[0] * e2[1] - e2[0] * e1[1] < 0 else torch.tensor([[0, 2, 1]])
        frag = rasterize(p, torch.ones(3), tri, torch.tensor([True]), 12, 12)
        q = p[tri[0]]
        edge = torch.stack(
            [
                (q[(k + 1) % 3, 0] - q[k, 0]) * (centres[:, 1] - q[k, 1])
                - (q[(k + 1) % 3, 1] - q[k, 1]) * (centres[:, 0] - q[k, 0])
                for k in range(3)
            ],
            1,
        )
        inside = ((edge <= 1e-6).all(1) | (edge >= -1e-6).all(1)).nonzero().squeeze(1)
        assert set(inside.tolist()) == set(frag.pixel.tolist())
        rebuilt = (frag.bary[:, :, None] * q[None]).sum(1)
        torch.testing.assert_close(rebuilt, centres[frag.pixel], atol=1e-4, rtol=0)
    # z-buffer keeps the nearest of two overlapping squares; back faces are culled; clip rects hold
    sq = torch.tensor([[0.0, 0.0], [0.0, 8.0], [8.0, 0.0], [8.0, 8.0]])
    xy = torch.cat([sq, sq + 2.0])
    depth = torch.tensor([5.0] * 4 + [1.0] * 4)
    tris = torch.tensor([[0, 1, 2], [2, 1, 3], [4, 5, 6], [6, 5, 7]])
    frag = rasterize(xy, depth, tris, torch.ones(4, dtype=torch.bool), 10, 10)
    assert frag.pixel.numel() == 64 + 64 - 36
    near = frag.depth < 3
    assert int(near.sum()) == 64 and bool((frag.tri[near] >= 2).all())
    assert (
        rasterize(xy, depth, tris[:, [0, 2, 1]], torch.ones(4, dtype=torch.bool), 10, 10).pixel.numel() == 0
    )
    tile = torch.tensor([[3.0, 5.0, 7.0, 9.0]]).expand(4, 4)  # a 4 x 4 tile at (3, 5); xy relative to it
    frag = rasterize(xy, depth, tris, torch.ones(4, dtype=torch.bool), 10, 10, tile)
    assert sorted(frag.pixel.tolist()) == [(5 + j) * 10 + 3 + i for j in range(4) for i in range(4)]


# ---------------------------------------------------------------------------------------- crops
def test_crop_determinism_and_batching() -> None:
    a = render_crop(0, 5, 48)
    b = render_crop(0, 5, 48)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = render_crop(0, 6, 48)
    assert not torch.equal(a["image"], c["image"])
    assert not torch.equal(render_crop(1, 5, 48)["image"], a["image"])
    batch = render_crops(0, [4, 5, 6], 48)
    for k in a:
        torch.testing.assert_close(batch[1][k], a[k], atol=1e-4, rtol=0)
        torch.testing.assert_close(batch[2][k], c[k], atol=1e-4, rtol=0)


@pytest.mark.parametrize("scheme,k", [("ibug68", 68), ("five_point", 5), ("aflw21", 21), ("aflw19", 19)])
def test_crop_contract(scheme: str, k: int) -> None:
    samples = render_crops(3, list(range(6)), 64, "source", scheme=scheme, num_identities=7)
    for s in samples:
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.float32
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert (
            s["landmarks"].shape == (k, 2) and s["landmarks_visible"].shape == (k,) and s["landmarks_visible"].dtype == torch.bool
        )
        assert s["pose"].shape == (3,) and s["boxes"].shape == (4,)
        assert s["identity"].dtype == torch.int64 and 0 <= int(s["identity"]) < 7
        lm = s["landmarks"]
        assert bool(((lm >= 0) & (lm < 64)).all())
        body = [
            i for i in range(k) if not (scheme == "aflw21" and i in (12, 16))
        ]  # ears lie beyond the face box
        inside = (lm[body] >= s["boxes"][:2] - 1e-4) & (lm[body] <= s["boxes"][2:] + 1e-4)
        assert bool(inside.all())
        assert -90 <= float(s["pose"][0]) <= 90 and -35 <= float(s["pose"][1]) <= 35
    collate_crops(samples)


def test_mesh_vertices_project_to_landmarks(human: HeadModel) -> None:
    for s in render_crops(2, [0, 1, 2], 64, "source", mesh=True):
        mesh = s["mesh"]
        assert mesh.shape == (human.num_vertices, 3)
        torch.testing.assert_close(mesh[human.landmark_index, :2], s["landmarks"], atol=1e-4, rtol=0)
        assert float(mesh[human.nose_tip_index, 2]) == 0.0
        # the visible side of the head is towards the camera: most landmarks have z near or above the ears'
        assert float(mesh[human.landmark_index, 2].median()) > float(mesh[:, 2].median())


def test_pupils_sit_on_the_labelled_eye_centres() -> None:
    """Centroid of the black pupil pixels near each labelled eye centre (clean domain) within 1 px."""
    found = 0
    for s in render_crops(1, list(range(12)), 128, "clean", scheme="five_point"):
        for e in range(2):
            if not s["landmarks_visible"][e]:
                continue
            cx, cy = (int(v) for v in s["landmarks"][e])
            x0, y0 = max(cx - 8, 0), max(cy - 8, 0)
            window = s["image"][:, y0 : cy + 9, x0 : cx + 9]
            ys, xs = (window.amax(0) < 0.004).nonzero(as_tuple=True)
            assert ys.numel() > 0
            centroid = torch.stack([xs.float().mean() + x0 + 0.5, ys.float().mean() + y0 + 0.5])
            assert float((centroid - s["landmarks"][e]).norm()) < 1.0
            found += 1
    assert found >= 20


def test_yaw_pitch_roll_signs_match_the_pose_convention() -> None:
    """Positive yaw: the nose tip moves to the image left of the eyes; positive pitch: up; positive
    roll: the eye line turns clockwise (the image-right eye goes down)."""
    samples = render_crops(4, list(range(30)), 48, "clean", scheme="five_point")
    pitches, highs, rolls, tilts = [], [], [], []
    for s in samples:
        lm = s["landmarks"]
        eye_mid = (lm[0] + lm[1]) / 2
        rel = lm[2] - eye_mid
        yaw = float(s["pose"][0])
        if abs(yaw) > 8:
            assert math.copysign(1.0, float(rel[0])) == -math.copysign(1.0, yaw)
        pitches.append(float(s["pose"][1]))
        highs.append(float(-rel[1] / ((lm[3] + lm[4]) / 2 - eye_mid).norm()))
        rolls.append(float(s["pose"][2]))
        eye_axis = lm[1] - lm[0]
        tilts.append(math.degrees(math.atan2(float(eye_axis[1]), float(eye_axis[0]))))
    assert float(torch.corrcoef(torch.tensor([pitches, highs]))[0, 1]) > 0.5
    assert float(torch.corrcoef(torch.tensor([rolls, tilts]))[0, 1]) > 0.9


def _umeyama_rotation(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Rotation R of the similarity best mapping src (N, 3) onto dst (N, 3)."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = torch.linalg.svd(b.T @ a)
    d = torch.ones(3, dtype=src.dtype)
    d[2] = torch.sign(torch.linalg.det(u @ vt))
    return u @ torch.diag(d) @ vt


def test_pose_labels_match_the_rendered_mesh(human: HeadModel) -> None:
    """The rotation fitted between the mean head and each sample's mesh gives back the pose label."""
    from facelit.geometry.pose import euler_from_matrix

    for s in render_crops(7, list(range(10)), 64, "source", mesh=True):
        mesh = s["mesh"].double()
        cam_like = torch.stack([mesh[:, 0], mesh[:, 1], -mesh[:, 2]], 1)  # x right, y down, z forward
        rot = _umeyama_rotation(human.vertices.double(), cam_like)  # ~ head_to_camera(pose)
        err = euler_from_matrix(rot.T) - s["pose"].double()
        err = (err + 180) % 360 - 180
        assert float(err.abs().max()) < 8.0, (s["pose"], err)


def test_self_occlusion_and_occluders_hide_landmarks() -> None:
    near_frontal = replace(DOMAINS["clean"], name="frontal", yaw=(-10.0, 10.0))
    frontal = render_crops(5, list(range(8)), 64, near_frontal)
    assert float(torch.stack([s["landmarks_visible"] for s in frontal]).float().mean()) > 0.97
    profile = replace(DOMAINS["clean"], name="profile", yaw=(75.0, 90.0))
    for s in render_crops(5, list(range(4)), 64, profile):
        vis = s["landmarks_visible"]
        # positive yaw turns the face to the image left: its image-left side goes behind the head
        assert not bool(vis[0:6].any()) and not bool(vis[36:42].all())
        assert bool(vis[30]) and bool(vis[42:48].all()) and bool(vis[12:17].any())
    occluded = replace(near_frontal, name="occluded", occluder_prob=1.0)
    fewer = 0
    for clear, occ in zip(frontal, render_crops(5, list(range(8)), 64, occluded), strict=True):
        assert torch.equal(clear["landmarks"], occ["landmarks"])
        assert bool((occ["landmarks_visible"] <= clear["landmarks_visible"]).all())
        fewer += int(occ["landmarks_visible"].sum() < clear["landmarks_visible"].sum())
    assert fewer >= 4


def test_domains_differ_in_pose_and_style() -> None:
    src = render_crops(6, list(range(24)), 32, "source")
    tgt = render_crops(6, list(range(24)), 32, "target")
    src_yaw = torch.stack([s["pose"][0] for s in src]).abs()
    tgt_yaw = torch.stack([s["pose"][0] for s in tgt]).abs()
    assert float(tgt_yaw.max()) <= 60.0 < float(src_yaw.max())
    assert DOMAINS["source"].yaw == (-90.0, 90.0) and DOMAINS["target"].yaw == (-60.0, 60.0)

    def stats(samples: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        img = torch.stack([s["image"] for s in samples])
        rgb = img.mean((0, 2, 3))
        saturation = (img.amax(1) - img.amin(1)).mean()
        return torch.cat([rgb, saturation[None]])

    s, t = stats(src), stats(tgt)
    assert float(t[2] - t[0]) > float(s[2] - s[0]) + 0.05  # target is bluer
    assert float(t[3]) < float(s[3])  # and less saturated


@pytest.mark.parametrize("species", ["horse", "sheep"])
def test_animals(species: str, human: HeadModel) -> None:
    model = head_model(species)
    assert model.landmark_index.shape == (5,)

    def ratio(
        eye_l: torch.Tensor, eye_r: torch.Tensor, mouth_l: torch.Tensor, mouth_r: torch.Tensor
    ) -> float:
        """Eye distance over eye-to-mouth distance in the frontal view."""
        return float((eye_r - eye_l).norm() / ((mouth_l + mouth_r) / 2 - (eye_l + eye_r) / 2).norm())

    a = _frontal(model.vertices)[model.landmark_index]
    h = _frontal(human.vertices)[human.landmark_index]
    animal = ratio(a[0], a[1], a[3], a[4])
    person = ratio(h[36:42].mean(0), h[42:48].mean(0), h[48], h[54])
    assert abs(animal - person) / person > 0.2
    for s in render_crops(0, [0, 1], 64, "source", species=species, scheme="animal5"):
        assert s["landmarks"].shape == (5, 2) and s["landmarks_visible"].shape == (5,)
        assert bool(((s["landmarks"] >= 0) & (s["landmarks"] < 64)).all())


# --------------------------------------------------------------------------------------- scenes
def _scene_checks(s: dict[str, torch.Tensor], h: int, w: int, v: int) -> None:
    n = s["boxes"].shape[0]
    assert s["image"].shape == (3, h, w)
    shapes = {
        "landmarks": (n, 5, 2),
        "landmarks_valid": (n,),
        "landmarks_visible": (n, 5),
        "mesh": (n, v, 3),
        "mesh_valid": (n,),
        "ignore": (n,),
        "difficulty": (n, 3),
        "blur": (n,),
        "occlusion": (n,),
        "pose": (n, 3),
    }
    for key, shape in shapes.items():
        assert tuple(s[key].shape) == shape, key
    if n == 0:
        return
    boxes = s["boxes"]
    assert (
        bool((boxes[:, :2] >= 0).all()) and bool((boxes[:, 2] <= w).all()) and bool((boxes[:, 3] <= h).all())
    )
    lm, vis = s["landmarks"], s["landmarks_visible"]
    inside = (lm >= boxes[:, None, :2] - 1e-3) & (lm <= boxes[:, None, 2:] + 1e-3)
    assert bool(inside.all(-1)[vis].all())
    d = s["difficulty"]
    assert bool((d[:, 0] <= d[:, 1]).all()) and bool((d[:, 1] <= d[:, 2]).all()) and bool(d[:, 2].all())
    assert not bool(s["ignore"].any())
    assert s["blur"].dtype == torch.int64 and int(s["blur"].max()) <= 2 and int(s["occlusion"].max()) <= 2


def test_scene_contract_sizes_and_empty_scenes(human: HeadModel) -> None:
    scenes = render_scenes(2, list(range(24)), 128, 128, "source")
    heights = []
    for s in scenes:
        _scene_checks(s, 128, 128, human.num_vertices)
        heights.append(s["boxes"][:, 3] - s["boxes"][:, 1])
    counts = [h.numel() for h in heights]
    all_h = torch.cat(heights)
    assert 0 in counts and max(counts) >= 8
    assert float(all_h.min()) < 12.0 and float(all_h.max()) > 60.0
    assert float(all_h.min()) >= 6.0 - 1e-3
    hard_only = torch.cat([s["difficulty"] for s in scenes])
    assert bool(hard_only[:, 0].any()) and bool((~hard_only[:, 1]).any())
    batch = collate_detections(scenes[:4])
    assert batch["mesh"].shape[2] == human.num_vertices


def test_scene_mesh_and_determinism(human: HeadModel) -> None:
    a = render_scene(3, 1, 160, 160)
    b = render_scenes(3, [0, 1], 160, 160)[1]
    assert a["boxes"].shape[0] > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-3, rtol=0)
    mesh = a["mesh"]
    torch.testing.assert_close(mesh[:, human.nose_tip_index, 2], torch.zeros(mesh.shape[0]))
    # the mesh projects onto the landmarks: eye centres are means of the eye-landmark vertices' x, y
    eyes = mesh[:, human.landmark_index[36:42], :2].mean(1)
    torch.testing.assert_close(eyes, a["landmarks"][:, 0], atol=0.5, rtol=0)
    torch.testing.assert_close(mesh[:, human.landmark_index[30], :2], a["landmarks"][:, 2], atol=1e-3, rtol=0)


def test_scene_argument_errors() -> None:
    with pytest.raises(ValueError, match="32"):
        render_scene(0, 0, 16, 16)
    with pytest.raises(ValueError, match="min_face"):
        render_scene(0, 0, 64, 64, min_face=0.0)
    assert render_scene(0, 0, 64, 64, max_faces=0)["boxes"].shape == (0, 4)


# ------------------------------------------------------------------------------------- datasets
def test_datasets_match_render_functions() -> None:
    ds = FaceCropDataset(seed=2, length=5, size=32, scheme="five_point")
    assert len(ds) == 5
    items = ds.__getitems__([0, 3])
    single = ds[3]
    for key in single:
        torch.testing.assert_close(items[1][key], single[key], atol=1e-4, rtol=0)
    torch.testing.assert_close(
        single["image"], render_crop(2, 3, 32, scheme="five_point")["image"], atol=1e-4, rtol=0
    )
    with pytest.raises(IndexError):
        ds[5]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_crops)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["landmarks"].shape == (4, 5, 2)
    scenes = SceneDataset(seed=1, length=3, height=64, width=96)
    assert len(scenes) == 3 and scenes[2]["image"].shape == (3, 64, 96)
    with pytest.raises(ValueError, match="length"):
        SceneDataset(length=-1)
