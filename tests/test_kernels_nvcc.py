"""Every kernels/*.cu compiles alone with the installed nvcc for sm_80 and sm_90, warnings as errors,
and the ptxas report shows no register spills.

Runs without a GPU (compilation only, to cubin). Flags mirror what the loader gives NVRTC (-std=c++17,
the -D tunables) plus CuPy's -ftz=true. Skipped, saying so, where nvcc is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kernels import _loader

NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None)
pytestmark = pytest.mark.skipif(
    NVCC is None, reason="nvcc not found (the CUDA compiler is needed to compile kernels/*.cu)"
)
KERNEL_DIR = Path(_loader.__file__).resolve().parent
ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
SPILL = re.compile(r"Function properties for (\w+)\s+(\d+) bytes stack frame, (\d+) bytes spill stores, "
                   r"(\d+) bytes spill loads")


def test_every_source_is_covered():
    assert sorted(p.name for p in KERNEL_DIR.glob("*.cu")) == sorted(_loader.KERNELS)


@pytest.mark.parametrize("name", sorted(_loader.KERNELS))
def test_loader_tunables_equal_the_source_defaults(name):
    """The file compiled alone (defaults) is the file the loader compiles (explicit -D values)."""
    code = (KERNEL_DIR / name).read_text()
    for opt in _loader.OPTIONS[name]:
        if opt.startswith("-D"):
            macro, value = opt[2:].split("=")
            assert re.search(rf"#ifndef {macro}\n#define {macro} {value}\n#endif", code), (name, opt)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", sorted(_loader.KERNELS))
def test_nvcc_compiles_without_warnings_or_spills(name, arch, tmp_path):
    cmd = [NVCC, f"-arch={arch}", "-cubin", "-Werror", "all-warnings", "-Xptxas", "-v", "-ftz=true",
           *_loader.OPTIONS[name], "-o", str(tmp_path / "k.cubin"), str(KERNEL_DIR / name)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"nvcc failed for {name} ({arch}):\n{log}"
    entries = {k for k, a in ENTRY.findall(log) if a == arch}
    assert entries == set(_loader.KERNELS[name]), f"{name} defines {entries}, not the loader's list"
    spills = {fn: (int(st), int(ld)) for fn, _, st, ld in SPILL.findall(log) if fn in entries}
    assert set(spills) == entries, f"no ptxas resource report for {entries - set(spills)}:\n{log}"
    spilling = {fn: v for fn, v in spills.items() if v != (0, 0)}
    assert not spilling, f"register spills (stores, loads) in {name} for {arch}: {spilling}"
