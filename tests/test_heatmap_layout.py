"""GL-free layout of the compare view's layer-similarity heat map: hit tests and colours."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.heatmap import CELL_RANGE, MAX_H, MAX_W, heat_colors, heatmap_layout


@pytest.mark.parametrize("rows,cols", [(25, 21), (4, 3), (1, 1), (60, 7)])
def test_every_cell_centre_hits_its_own_cell_and_the_edges_miss(rows, cols, rng):
    right, bottom = float(rng.uniform(400, 1600)), float(rng.uniform(300, 900))
    lay = heatmap_layout(rows, cols, right=right, bottom=bottom)
    assert lay.bar[2] == right and lay.y1 == bottom
    assert CELL_RANGE[0] <= lay.cell <= CELL_RANGE[1]
    assert lay.cols * lay.cell <= max(MAX_W, cols * CELL_RANGE[0]) and lay.rows * lay.cell <= max(
        MAX_H, rows * CELL_RANGE[0])
    assert lay.x1 < lay.bar[0]  # the matrix sits left of its colour bar
    for i in range(rows):
        for j in range(cols):
            assert lay.cell_at(*lay.cell_center(i, j)) == (i, j)
    assert lay.cell_at(lay.x0 - 0.5, lay.y0 + 1) is None
    assert lay.cell_at(lay.x1, lay.y0 + 1) is None  # right edge is exclusive
    assert lay.cell_at(lay.x0 + 1, lay.y1) is None
    assert lay.cell_at(lay.x0, lay.y0) == (0, 0)


def test_heat_colours_span_the_matrix_range_monotonically(rng):
    S = rng.uniform(0.05, 0.95, (7, 5))
    cols, (lo, hi) = heat_colors(S)
    assert (lo, hi) == (S.min(), S.max())
    assert cols.shape == (35, 4) and cols.dtype == np.float32
    from viewer.colors import continuous_colormap

    cmap = continuous_colormap()
    np.testing.assert_array_equal(cols[np.argmin(S)], cmap[0])
    np.testing.assert_array_equal(cols[np.argmax(S)], cmap[-1])
    # rank order is kept: the colour map index rises with S
    idx = np.array([np.flatnonzero(np.all(cmap == c, axis=1))[0] for c in cols])
    order = np.argsort(S.ravel(), kind="stable")
    assert np.all(np.diff(idx[order]) >= 0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least one row"):
        heatmap_layout(0, 3, right=100, bottom=100)
