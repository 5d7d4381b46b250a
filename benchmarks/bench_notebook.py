"""The notebook widget as a remote user gets it: event -> new frame in the browser, frames per
second the browser receives while the tour plays, and bytes per frame, at each N.

Set-up (the browser test's harness, tests/_browser.py): a real Jupyter server (Notebook 7) on
127.0.0.1, headless Chromium driven by selenium, the kernel without an X display (so the widget
renders through EGL: Mesa's llvmpipe on a CPU machine, NVIDIA's driver on a GPU server). One
notebook cell shows an empty box; for each N the kernel opens ``viewer.show`` on a bundle of N
points (p = 15, two layers, ten Gaussian classes) and puts it in the box.

- latency: the tour paused, a wheel notch is dispatched on the image in the page (alternately in
  and out) and the clock (the page's ``performance.now()``) stops at the ``load`` event of the next
  image — the whole path: jupyter_rfb's 20 ms event throttle, the websocket, the kernel (VisPy
  event -> zoom -> draw -> read-back -> JPEG), the websocket back, the image decode. Between
  samples the page waits until no image has arrived for 0.6 s (the lossless PNG redraw included).
- fps: the tour playing for ``--seconds``: images loaded by the page per second, and the frames
  jupyter_rfb saw acknowledged; the server's draw (+ read-back) and encode times per frame.
- bytes: mean JPEG bytes per frame while playing (quality 80) and the PNG of the resting view.

Each is compared with its floor or peer: latency ÷ (server draw + encode, measured over the same
events); fps against 1 ÷ (draw + encode) while playing; bytes per frame against the N·p·4 bytes a
browser-side viewer must receive before its first frame.

Usage: python benchmarks/bench_notebook.py [--n 50000 1000000] [--samples 25] [--seconds 8]
       [--size 900x640] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from _browser import NotebookSession, missing, wait_for, write_notebook  # noqa: E402

IMG = ".renderview-wrapper img"
P = 15

_WHEEL_JS = """
const [dy, done] = [arguments[0], arguments[arguments.length - 1]];
const img = document.querySelector(arguments[1]);
const r = img.getBoundingClientRect();
const t0 = performance.now();
img.addEventListener('load', () => done(performance.now() - t0), {once: true});
img.dispatchEvent(new WheelEvent('wheel', {deltaY: dy, deltaMode: 0, bubbles: true, cancelable: true,
                                            clientX: r.left + r.width / 2, clientY: r.top + r.height / 2}));
setTimeout(() => done(-1), 30000);
"""

_QUIET_JS = """
const [quiet, limit, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const img = document.querySelector(arguments[2]);
let last = performance.now();
const start = last;
const onload = () => { last = performance.now(); };
img.addEventListener('load', onload);
const check = () => {
  const now = performance.now();
  if (now - last >= quiet || now - start >= limit) {
    img.removeEventListener('load', onload);
    done(now - start);
  } else setTimeout(check, 50);
};
check();
"""

_COUNT_JS = """
const [seconds, done] = [arguments[0], arguments[arguments.length - 1]];
const img = document.querySelector(arguments[1]);
let n = 0;
const onload = () => { n += 1; };
img.addEventListener('load', onload);
setTimeout(() => { img.removeEventListener('load', onload); done(n); }, seconds * 1000);
"""


def make_bundle(path: Path, n: int, rng) -> None:
    from engine.store import BundleWriter

    w = BundleWriter(path, n=n, dim=P, overwrite=True)
    w.add_model("net")
    labels = rng.integers(0, 10, n)
    for k in range(2):
        centres = rng.normal(scale=3.0, size=(10, P))
        w.write_layer("net", f"{k}-layer", (centres[labels] + rng.normal(size=(n, P))).astype(np.float32))
    w.set_attribute("label", labels, "categorical", categories=[f"class {i}" for i in range(10)])
    w.commit()


def _mean_draw(a: dict, b: dict) -> float:
    """Mean server draw (+ read-back) time of the draws between two ``w.stats`` snapshots."""
    draws = b["draws"] - a["draws"]
    return (b["draw_s"] * b["draws"] - a["draw_s"] * a["draws"]) / draws if draws else 0.0


def run_one(nb: NotebookSession, path: Path, n: int, size, samples: int, seconds: float) -> dict:
    t = time.perf_counter()
    nb.py(f"w = viewer.show({str(path)!r}, size={tuple(size)!r}, device='cpu', seed=0)\n"
          "holder.children = (w,)")
    opened = time.perf_counter() - t
    wait_for(lambda: nb.js(f"const i = document.querySelector('{IMG}'); "
                           "return !!i && i.naturalWidth > 16"), 120, "the widget's first frame")
    first = time.perf_counter() - t
    nb.py("w.playing = False")
    el = nb.driver.find_element("css selector", IMG)
    el.click()  # the widget takes wheel events once focused
    nb.driver.execute_async_script(_QUIET_JS, 600, 10000, IMG)
    start = nb.py("", "w.stats")
    lat = []
    for i in range(samples):
        ms = nb.driver.execute_async_script(_WHEEL_JS, -100 if i % 2 == 0 else 100, IMG)
        if ms < 0:
            raise TimeoutError(f"N={n}: no new frame within 30 s of a wheel event")
        lat.append(ms / 1000.0)
        nb.driver.execute_async_script(_QUIET_JS, 600, 10000, IMG)
    rest = nb.py("", "w.stats")
    png0, png1 = (s["sent"].get("image/png", (0, 0)) for s in (start, rest))
    png = (png1[0] - png0[0], png1[1] - png0[1])
    lat_draw = _mean_draw(start, rest)
    before = nb.py("w.view.reset_stats(); w.playing = True", "w.stats")
    loads = nb.driver.execute_async_script(_COUNT_JS, seconds, IMG)
    after = nb.py("w.playing = False", "w.stats")
    jpeg0, jpeg1 = (s["sent"].get("image/jpeg", (0, 0)) for s in (before, after))
    frames = jpeg1[0] - jpeg0[0]
    draw_s = _mean_draw(before, after)
    nb.py("w.close(); holder.children = ()")
    lat.sort()
    med = statistics.median(lat)
    server = lat_draw + after["encode_s"]
    jpeg_bpf = (jpeg1[1] - jpeg0[1]) / frames if frames else 0.0
    return {
        "n": n, "p": P, "size": list(size), "offscreen": after["offscreen"], "open_s": opened,
        "first_frame_s": first, "latency_samples": samples, "latency_median_s": med,
        "latency_p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))], "latency_min_s": lat[0],
        "seconds": seconds, "fps_browser": loads / seconds, "fps_acknowledged": after["fps"],
        "frames_sent": frames, "draw_s_playing": draw_s, "draw_s_latency": lat_draw,
        # the server-bound frame rate: one draw + one encode per frame, nothing else
        "fps_server_bound": 1.0 / (draw_s + after["encode_s"]) if draw_s else None,
        "encode_s": after["encode_s"], "server_s": server, "load_average": os.getloadavg(),
        "latency_over_server": med / server if server else None, "jpeg_bytes_per_frame": jpeg_bpf,
        "png_bytes_per_frame": png[1] / png[0] if png[0] else None, "data_bytes": n * P * 4,
        "data_over_frame": (n * P * 4) / jpeg_bpf if jpeg_bpf else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50_000, 1_000_000])
    ap.add_argument("--samples", type=int, default=25, help="wheel events timed per N")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of playing tour counted per N")
    ap.add_argument("--size", default="900x640", help="widget size in CSS pixels")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    why = missing()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    size = tuple(int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-notebook-") as tmp:
        root = Path(tmp)
        for n in args.n:
            make_bundle(root / f"n{n}.lt", n, rng)
        write_notebook(root / "bench.ipynb",
                       ["import ipywidgets, viewer\nholder = ipywidgets.VBox()\nholder"])
        nb = NotebookSession(root)
        try:
            nb.start("bench.ipynb")
            wait_for(lambda: nb.py("", "'holder' in globals()"), 60, "the notebook's cell to run")
            for n in args.n:
                r = run_one(nb, root / f"n{n}.lt", n, size, args.samples, args.seconds)
                results.append(r)
                print(f"N={n:>9,}  latency median {1000 * r['latency_median_s']:6.0f} ms "
                      f"(p95 {1000 * r['latency_p95_s']:.0f}, server {1000 * r['server_s']:.0f} ms: "
                      f"x{r['latency_over_server']:.2f})  fps {r['fps_browser']:5.1f} "
                      f"(server-bound {r['fps_server_bound'] or 0:.1f})  "
                      f"JPEG {r['jpeg_bytes_per_frame'] / 1024:5.1f} kB/frame  PNG "
                      f"{(r['png_bytes_per_frame'] or 0) / 1024:5.1f} kB  "
                      f"data/frame x{r['data_over_frame'] or 0:,.0f}", flush=True)
        finally:
            nb.close()
    from engine.device import _cpu_name

    out = {"benchmark": "bench_notebook", "date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
           "cpu": _cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
           "python": platform.python_version(), "browser": "headless Chromium (Debian), selenium",
           "server": "Jupyter Notebook 7 on 127.0.0.1", "quality": 80, "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
