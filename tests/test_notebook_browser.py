"""The notebook widget end to end: a real Jupyter server on 127.0.0.1 (Notebook 7), headless
Chromium from Debian's packages driven by selenium, a notebook that calls ``viewer.show`` on a small
bundle, and the kernel read back from Python. The kernel has no X display, so the widget renders
through EGL (Mesa here, NVIDIA's on a GPU server).

One server, one browser and one notebook serve every check (module-scoped fixture), in order:
the image shows points; a drag on a handle turns the frame; a key changes the layer; a brush
selects the expected indices and the Python side (property and callback) sees them; closing frees
the GL context.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from _browser import NotebookSession, missing, wait_for, write_notebook
from _v2_helpers import make_bundle

pytestmark = [pytest.mark.slow]

N, P = 1200, 6
W, H = 600, 440
IMG = ".renderview-wrapper img"
NOTEBOOK = f"""import numpy as np, viewer
from viewer.controllers import BrushController, HandleController
selections = []
w = viewer.show("small.lt", size=({W}, {H}), device="cpu", seed=0)
w.on_selection(selections.append)
w"""


@pytest.fixture(scope="module")
def nb(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("notebook")
    make_bundle(root / "small.lt", np.random.default_rng(3), n=N, p=P, layers=3, images=False)
    write_notebook(root / "view.ipynb", [NOTEBOOK])
    session = NotebookSession(root)
    try:
        session.start("view.ipynb")
        wait_for(lambda: session.js(f"const i = document.querySelector('{IMG}');"
                                    " return !!i && i.naturalWidth > 16"), 90, "the widget's first frame")
        yield session
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- server log ---\n{session.server_log()}\n"
                             f"--- browser log ---\n{session.browser_log()}") from exc
    finally:
        session.close()


def element(nb):
    return nb.driver.find_element("css selector", IMG)


def shown(nb) -> np.ndarray:
    """What the browser shows in the widget now: (h, w, 3) uint8 from a screenshot of the image."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element(nb).screenshot_as_png)).convert("RGB"))


def frame_index(nb) -> int:
    return int(nb.py("", "w.view._rfb_frame_index"))


def settle(nb, timeout=20.0):
    """Wait until the kernel has drawn and the browser has acknowledged everything pending."""
    def idle():
        a = nb.py("", "[w.view._rfb_frame_index, w.view._frame_feedback.get('index', 0), "
                      "w.view._rfb_draw_requested]")
        return a[0] == a[1] and not a[2]
    wait_for(idle, timeout, "the widget to settle", interval=0.2)
    time.sleep(0.5)  # the lossless redraw that follows the last JPEG


def actions(nb):
    from selenium.webdriver.common.action_chains import ActionChains

    return ActionChains(nb.driver, duration=20)


def at(el, x, y):
    """Selenium offset (from the element's border-box centre) of the view's pixel (x, y), which
    the browser reports relative to the image's padding box (inside its border)."""
    r = el.rect
    bx, by = el.parent.execute_script("return [arguments[0].clientLeft, arguments[0].clientTop]", el)
    return int(round(bx + x - r["width"] / 2)), int(round(by + y - r["height"] / 2))


def drag(nb, path):
    el = element(nb)
    a = actions(nb)
    a.move_to_element_with_offset(el, *at(el, *path[0])).click_and_hold()
    for q in path[1:]:
        a.move_to_element_with_offset(el, *at(el, *q))
    a.release().perform()


def focus(nb):
    """Click the title bar of the view (nothing there reacts; the widget takes keys once clicked)."""
    el = element(nb)
    actions(nb).move_to_element_with_offset(el, *at(el, W / 2, 6)).click().perform()


def plot_rect(nb) -> np.ndarray:
    """(x0, y0, x1, y1) of the view's plot area in its pixels."""
    r = nb.py("", "(lambda r: [r.x, r.y, r.x1, r.y1])(w.window.plot_rect)")
    return np.asarray(r, dtype=np.float64)


def test_widget_image_shows_points(nb):
    assert nb.py("", "[w.gl.app, w.gl.kind]") == ["egl", "Mesa EGL"] or \
        nb.py("", "w.gl.kind") == "NVIDIA EGL"
    # the window draws at the size the browser lays the image out at (the widget asked for W x H)
    client = nb.js("return [arguments[0].clientWidth, arguments[0].clientHeight]", element(nb))
    assert nb.py("", "list(w.window.size)") == client and abs(client[0] - W) <= 4 and abs(client[1] - H) <= 4
    img = shown(nb)
    h, w = img.shape[:2]
    core = img[h // 4: 3 * h // 4, w // 4: 3 * w // 4].astype(int)
    background = np.median(img[:, w // 2 - 20: w // 2 + 20].reshape(-1, 3), axis=0)
    lit = np.abs(core - background).max(axis=2) > 60
    assert lit.sum() > 200, f"only {lit.sum()} point pixels in the view's centre"
    colours = {tuple(c // 32) for c in core[lit]}
    assert len(colours) >= 4, "points drawn in the class colours"
    status = nb.driver.find_element("css selector", ".widget-html").text
    assert "offscreen" in status and "EGL" in status
    assert nb.py("", "w.stats['frames_sent']") >= 1


def test_drag_on_a_handle_changes_the_frame(nb):
    nb.py("w.playing = False")
    focus(nb)
    actions(nb).send_keys("a").perform()  # axis handles
    wait_for(lambda: nb.py("", "len(next(c for c in w.window.controllers if isinstance(c, HandleController))"
                               ".handles.handles)") > 0, 20, "axis handles")
    settle(nb)
    pos, centre, before = nb.py("hc = next(c for c in w.window.controllers "
                                "if isinstance(c, HandleController))",
                                "[hc.pixel_positions(w.window).tolist(), "
                                "w.window.data_to_pixels(np.zeros((1, 2)))[0].tolist(), w.frame.tolist()]")
    pos, centre = np.asarray(pos), np.asarray(centre)
    x0, y0, x1, y1 = plot_rect(nb)
    inside = (pos[:, 0] > x0 + 10) & (pos[:, 0] < x1 - 10) & (pos[:, 1] > y0 + 10) & (pos[:, 1] < y1 - 10)
    assert inside.any(), f"no axis handle inside the plot: {pos.tolist()}"
    k = int(np.argmax(np.where(inside, np.linalg.norm(pos - centre, axis=1), -1.0)))
    start = pos[k]
    img0, f0 = shown(nb), frame_index(nb)
    target = centre + (start - centre) * 0.4 + np.array([25.0, -20.0])
    drag(nb, [start, (start + target) / 2, target])
    wait_for(lambda: not np.allclose(nb.py("", "w.frame.tolist()"), before, atol=1e-3), 20,
             "the frame to turn")
    wait_for(lambda: frame_index(nb) > f0, 20, "a new frame")
    settle(nb)
    assert np.abs(shown(nb).astype(int) - img0).max() > 60, "the browser shows the turned projection"


def test_key_changes_the_layer(nb):
    assert nb.py("", "w.layer") == 0
    focus(nb)
    actions(nb).send_keys("j").perform()
    wait_for(lambda: nb.py("", "w.layer") == 1, 20, "layer 1 after j")
    wait_for(lambda: nb.py("", "w.window.transition is None"), 20, "the layer blend to end")


def test_brush_selects_the_expected_indices(nb):
    settle(nb)
    px = np.asarray(nb.py("c = w.window; y = np.asarray(c.layer_data(c.layer_index), np.float64)",
                          "c.data_to_pixels((y @ c.frame)[:, :2]).tolist()"))
    x0, y0, x1, y1 = plot_rect(nb)
    r0 = np.array([x0 + 0.2 * (x1 - x0), y0 + 0.2 * (y1 - y0)])
    r1 = np.array([x0 + 0.75 * (x1 - x0), y0 + 0.7 * (y1 - y0)])
    focus(nb)
    actions(nb).send_keys("b").perform()
    wait_for(lambda: nb.py("", "next(c for c in w.window.controllers if isinstance(c, BrushController))"
                               ".armed") == "rect", 20, "the brush to arm")
    drag(nb, [r0, (r0 + r1) / 2, r1])
    inside = np.all((px >= r0) & (px <= r1), axis=1)
    # points within 2 px of an edge may fall either way (selenium moves by whole pixels)
    clear = np.min(np.abs(np.concatenate([px - r0, px - r1], axis=1)), axis=1) > 2.0
    assert inside.sum() > 20
    sel = np.asarray(wait_for(lambda: nb.py("", "w.selection.tolist()"), 20, "a selection"))
    got = np.zeros(N, bool)
    got[sel] = True
    np.testing.assert_array_equal(got[clear], inside[clear])
    last = nb.py("", "selections[-1].tolist() if selections else None")
    np.testing.assert_array_equal(last, sel)


def test_closing_frees_the_gl_context(nb):
    alive = nb.py("import gc, weakref\nfrom viewer import offscreen\n"
                  "del c, hc  # the earlier checks' names for the window and its handle controller\n"
                  "ctx, app, ref = w._context, w.gl.app, weakref.ref(w.window)",
                  "offscreen.context_alive(app, ctx)")
    assert alive
    gone = nb.py("w.close(); gc.collect()", "[w.closed, offscreen.context_alive(app, ctx), ref() is None]")
    assert gone == [True, False, True]
    wait_for(lambda: not nb.driver.find_elements("css selector", IMG), 20, "the widget to leave the page")
