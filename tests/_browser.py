"""A real notebook in a real browser, for the widget's tests and benchmark: one Jupyter server
(Notebook 7) on 127.0.0.1 with a random port and token, headless Chromium from Debian's packages
driven by selenium, and a kernel client attached to the notebook's own kernel so that checks read
the widget from Python.

Everything lives under one temporary directory (server root, Jupyter config/data/runtime dirs,
Chromium's profile); :meth:`NotebookSession.close` stops the browser and the server. The kernel
inherits this process's environment minus ``DISPLAY``, so the widget renders through EGL as on a
server with no X display.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from queue import Empty

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1100"]


def missing() -> str | None:
    """Why a browser session cannot run here, or None."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromium-driver are not installed (Debian: apt-get install chromium " \
               "chromium-driver)"
    for mod in ("selenium", "notebook", "jupyter_rfb", "ipywidgets", "jupyter_client"):
        try:
            __import__(mod)
        except ImportError:
            return f"python package {mod!r} is missing (pip install -e '.[notebook,dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn, timeout: float, what: str, interval: float = 0.1):
    """Poll ``fn()`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as exc:  # a page still loading, a kernel still starting
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


class NotebookSession:
    """Server + browser + kernel client on one notebook (see the module docstring)."""

    def __init__(self, root: Path, env: dict | None = None):
        self.root = Path(root)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.runtime = self.root / ".jupyter-runtime"
        self.server = None
        self.driver = None
        self.kernel = None
        env = dict(os.environ if env is None else env)
        env.pop("DISPLAY", None)
        for var, sub in (("JUPYTER_CONFIG_DIR", ".jupyter-config"), ("JUPYTER_DATA_DIR", ".jupyter-data"),
                         ("JUPYTER_RUNTIME_DIR", ".jupyter-runtime"),
                         ("IPYTHONDIR", ".ipython"), ("JUPYTERLAB_WORKSPACES_DIR", ".jupyter-workspaces"),
                         ("JUPYTERLAB_SETTINGS_DIR", ".jupyter-settings")):
            (self.root / sub).mkdir(exist_ok=True)
            env[var] = str(self.root / sub)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.env = env

    # ------------------------------------------------------------------ start
    def start(self, notebook: str, timeout: float = 120.0) -> None:
        """Start the server, open ``notebook`` (a path under the root) in Chromium, run all its
        cells and attach a kernel client to its kernel."""
        self._start_server(timeout)
        self._start_browser()
        self.driver.get(f"{self.base}/notebooks/{notebook}?token={self.token}")
        wait_for(lambda: self.js("return !!(window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                 " && window.jupyterapp.shell.currentWidget.sessionContext"
                                 " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                 " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                 " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                 ".connectionStatus === 'connected')"),
                 timeout, "the notebook's kernel to connect")
        self.js("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self._attach_kernel(notebook, timeout)

    def _start_server(self, timeout: float) -> None:
        cmd = [sys.executable, "-m", "notebook", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--ServerApp.allow_root=True", "--JupyterNotebookApp.expose_app_in_browser=True",
               "--ServerApp.open_browser=False",
               "--ServerApp.log_level=WARN"]
        self._server_log = open(self.root / "jupyter-server.log", "w")  # noqa: SIM115 (closed in close())
        self.server = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self._server_log,
                                       stderr=subprocess.STDOUT)

        def up():
            if self.server.poll() is not None:
                raise RuntimeError(f"jupyter server exited with {self.server.returncode}: "
                                   f"{self.server_log()}")
            with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2) as r:
                return r.status == 200

        wait_for(up, timeout, "the Jupyter server", interval=0.3)

    def _start_browser(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in CHROMIUM_ARGS:
            opts.add_argument(a)
        profile = self.root / ".chromium-profile"
        profile.mkdir(exist_ok=True)
        opts.add_argument(f"--user-data-dir={profile}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, log_output=str(self.root / "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=opts)
        self.driver.set_script_timeout(60)

    def _attach_kernel(self, notebook: str, timeout: float) -> None:
        from jupyter_client import BlockingKernelClient

        def kernel_id():
            with urllib.request.urlopen(f"{self.base}/api/sessions?token={self.token}", timeout=5) as r:
                sessions = json.load(r)
            return next((s["kernel"]["id"] for s in sessions if s.get("path") == notebook), None)

        kid = wait_for(kernel_id, timeout, f"a kernel session for {notebook}")
        path = self.runtime / f"kernel-{kid}.json"
        conn = wait_for(lambda: path.exists() and path, timeout, "the kernel's connection file")
        kc = BlockingKernelClient(connection_file=str(conn))
        kc.load_connection_file()
        # Only the shell channel: the checks read replies, never output. Not wait_for_ready():
        # after the kernel answers it drains iopub until a 0.2 s gap, and a playing widget
        # publishes a frame more often than that on a quiet machine, so it never returned (CI hung).
        kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self.kernel = kc
        deadline = time.monotonic() + timeout

        def answered():
            msg_id = kc.kernel_info()
            end = min(deadline, time.monotonic() + 2.0)
            while time.monotonic() < end:
                try:
                    reply = kc.get_shell_msg(timeout=max(0.05, end - time.monotonic()))
                except Empty:
                    return False
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["msg_type"] == "kernel_info_reply"
            return False

        wait_for(answered, timeout, "the notebook's kernel to answer kernel_info", interval=0.2)

    # ------------------------------------------------------------------ use
    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def py(self, code: str, expr: str | None = None, timeout: float = 60.0):
        """Run ``code`` in the notebook's kernel; return ``json.loads(json.dumps(expr))`` evaluated
        there afterwards (None without ``expr``). Raises RuntimeError with the kernel's traceback."""
        exprs = {} if expr is None else {"v": f"__import__('json').dumps({expr})"}
        msg_id = self.kernel.execute(code, silent=False, store_history=False, user_expressions=exprs)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the kernel did not answer within {timeout:.0f} s: {code!r} {expr!r}")
            try:
                reply = self.kernel.get_shell_msg(timeout=left)
            except Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"kernel error {content.get('ename')}: {content.get('evalue')}\n"
                               + "\n".join(content.get("traceback", [])))
        if expr is None:
            return None
        out = content["user_expressions"]["v"]
        if out["status"] != "ok":
            raise RuntimeError(f"kernel error evaluating {expr!r}: {out.get('ename')}: {out.get('evalue')}")
        return json.loads(ast.literal_eval(out["data"]["text/plain"]))

    def server_log(self) -> str:
        try:
            return (self.root / "jupyter-server.log").read_text()[-4000:]
        except OSError:
            return ""

    def browser_log(self) -> str:
        try:
            return "\n".join(e["message"] for e in self.driver.get_log("browser"))[-4000:]
        except Exception:
            return ""

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.stop_channels()
            self.kernel = None
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=10)
            self.server = None
            self._server_log.close()
