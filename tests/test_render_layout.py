"""GL-free layout of what the viewer uploads: data textures, frame blocks, image atlases, path choice."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vispy")

from viewer import atlas, render_paths  # noqa: E402


@pytest.mark.parametrize("n, p, max_size", [(1, 1, 64), (37, 15, 16), (1000, 37, 128), (5, 4, 8)])
def test_pack_layer_puts_point_i_at_its_texels(rng, n, p, max_size):
    data = rng.normal(size=(n, p)).astype(np.float32)
    q, per_row, width, height = render_paths.texture_layout(n, p, max_size)
    tex = render_paths.pack_layer(data, max_size)
    assert tex.shape == (height, width, 4) and width <= max_size and height <= max_size
    assert q == -(-p // 4) and width == q * per_row
    for i in rng.choice(n, size=min(n, 20), replace=False):
        row, col = i // per_row, q * (i % per_row)  # the shader's addressing
        got = tex[row, col: col + q].reshape(-1)
        np.testing.assert_array_equal(got[:p], data[i])
        assert np.all(got[p:] == 0)


def test_texture_layout_refuses_what_one_texture_cannot_hold():
    with pytest.raises(ValueError, match="copy or cuda render path"):
        render_paths.texture_layout(10_000, 15, 64)


@pytest.mark.parametrize("p, d", [(15, 2), (15, 3), (37, 2), (4, 3)])
def test_frame_blocks_reproduce_the_projection(rng, p, d):
    F = np.linalg.qr(rng.normal(size=(p, d)))[0]
    x = rng.normal(size=(50, p))
    blocks = render_paths.pack_frame(F).astype(np.float64)  # (d, q, 4)
    q = blocks.shape[1]
    xp = np.zeros((50, 4 * q))
    xp[:, :p] = x
    got = np.einsum("nkj,ckj->nc", xp.reshape(50, q, 4), blocks)  # what the shader sums
    np.testing.assert_allclose(got, x @ F, rtol=1e-6, atol=1e-6)


def test_atlas_plan_and_packing(rng):
    n = 300
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    plan = atlas.plan_atlases(n, 32, max_texture_size=256, budget_bytes=None)  # 8x8 cells per atlas
    assert (plan.cols, plan.per_atlas, plan.n_atlases, plan.n_loaded) == (8, 64, 5, 300) and plan.complete
    for i in rng.choice(n, 25, replace=False):
        k, r = divmod(int(i), plan.per_atlas)
        a = atlas.pack_atlas(imgs, plan, k)
        y, x = divmod(r, plan.cols)
        np.testing.assert_array_equal(a[y * 32:(y + 1) * 32, x * 32:(x + 1) * 32], imgs[i])


def test_atlas_budget_caps_images_and_says_how_many(rng):
    side = 256
    plan = atlas.plan_atlases(1000, 32, side, budget_bytes=2 * side * side * 3 + 5)
    assert plan.n_atlases == 2 and plan.n_loaded == 128 and not plan.complete
    assert plan.bytes <= 2 * side * side * 3 + 5
    big = atlas.plan_atlases(50_000, 32, 16384, None)  # the study: no fixed cap, one atlas suffices
    assert big.complete and big.cols * big.cols >= 50_000 and big.side <= 16384
    with pytest.raises(ValueError, match="thumbnail size"):
        atlas.plan_atlases(10, 64, 32, None)


def test_choose_path():
    assert render_paths.choose_path("auto", cuda_ok=True) == "cuda"
    assert render_paths.choose_path("auto", cuda_ok=True, gl_vendor="NVIDIA Corporation") == "cuda"
    assert render_paths.choose_path("auto", cuda_ok=True, gl_vendor="Mesa") == "copy"
    assert render_paths.choose_path("auto", cuda_ok=False) == "shader"
    assert render_paths.choose_path("copy", cuda_ok=False) == "copy"
    with pytest.raises(ValueError, match="needs CuPy"):
        render_paths.choose_path("cuda", cuda_ok=False)
    with pytest.raises(ValueError, match="not one of"):
        render_paths.choose_path("vulkan", cuda_ok=True)
