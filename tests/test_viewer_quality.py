"""The layer quality the viewer shows in its title bar (viewer.text.quality_text): a sample-fitted,
streamed layer's trustworthiness on fitted and transformed rows, its sample and its PCA basis;
values from a bundle are never trusted (a hostile meta shows nothing rather than raising)."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.text import quality_text

STREAMED = {"trustworthiness": 0.98123,
            "reduction": {"method": "randomised PCA", "dims": 256, "from_dim": 51200},
            "fit_sample": {"n": 20000, "trustworthiness_fit_rows": 0.9876,
                           "trustworthiness_transformed_rows": 0.9801}}


def test_quality_text_of_full_sampled_and_hostile_layers():
    assert quality_text(STREAMED) == ("trust 0.981  ·  fitted 0.988 / transformed 0.980 (sample 20,000)  ·  "
                                      "PCA 51,200→256")
    assert quality_text({"trustworthiness": 0.9, "knn_algorithm": "exact"}) == "trust 0.900"
    assert quality_text({"fit_sample": {"n": 500}}) == "fit sample 500"
    for hostile in (None, [], {"trustworthiness": "0.9"}, {"trustworthiness": float("nan")},
                    {"trustworthiness": 7}, {"fit_sample": {"n": True, "trustworthiness_fit_rows": 2}},
                    {"reduction": {"dims": -3, "from_dim": "x"}}, {"fit_sample": "x", "reduction": 5}):
        assert quality_text(hostile) == ""


@pytest.mark.gl
def test_the_title_bar_shows_the_current_layers_quality(tmp_path):
    pytest.importorskip("vispy")
    from engine.store import BundleWriter, load_bundle
    from viewer.canvas import TourCanvas

    rng = np.random.default_rng(0)
    w = BundleWriter(tmp_path / "q.lt", n=50, dim=5)
    w.add_model("net")
    w.write_layer("net", "0-In", rng.normal(size=(50, 5)), meta={"trustworthiness": 0.9})
    w.write_layer("net", "1-Conv", rng.normal(size=(50, 5)),
                  meta={**STREAMED, "fit_sample": {**STREAMED["fit_sample"], "n": 20}})
    c = TourCanvas(load_bundle(w.commit()), size=(900, 300), show=False, animate=False)
    try:
        assert c.title_lines(None)[0][0].endswith("0-In  ·  trust 0.900")
        c.set_layer(1, animate=False)
        assert "fitted 0.988 / transformed 0.980 (sample 20)  ·  PCA 51,200→256" in c.title_lines(None)[0][0]
    finally:
        c.close()
