"""engine.device: back-end resolution (auto | cuda | cpu, LAYERTOUR_DEVICE) and the xp helpers."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from conftest import gpu_status

import engine.device as device
from engine.device import CudaUnavailableError, array_module, is_cupy_array, like, resolve, to_host


@pytest.fixture(autouse=True)
def fresh_resolution(monkeypatch):
    """resolve() caches per process: clear it, and the environment override, around each test."""
    monkeypatch.delenv("LAYERTOUR_DEVICE", raising=False)
    device._resolve.cache_clear()
    yield
    device._resolve.cache_clear()


def test_cpu_is_numpy():
    b = resolve("cpu")
    assert (b.name, b.xp, b.reason, b.is_cuda) == ("cpu", np, "requested", False)
    assert "cores" in b.device_name
    assert resolve("CPU") is b  # case-insensitive, resolved once


def test_auto_picks_what_exists_and_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="layertour"):
        b = resolve("auto")
    ok, why = gpu_status()
    if ok:
        assert b.name == "cuda" and b.xp.__name__ == "cupy"
    else:
        assert b.name == "cpu" and b.xp is np and b.reason.startswith("auto: ")
        assert "CuPy" in b.reason or "CUDA" in b.reason
    assert f"back end: {b.name}" in caplog.text
    assert resolve(None) is b


def test_cuda_without_a_device_raises_a_named_error():
    if gpu_status()[0]:
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(CudaUnavailableError, match="CUDA back end requested but unavailable.*--device cpu"):
        resolve("cuda")
    assert issubclass(CudaUnavailableError, RuntimeError)


@pytest.mark.gpu
def test_cuda_with_a_device():
    b = resolve("cuda")
    assert b.is_cuda and b.reason == "requested" and b.device_name
    x = b.asarray(np.arange(5.0))
    assert is_cupy_array(x) and float(x.sum()) == 10.0


def test_environment_overrides_auto_only(monkeypatch):
    monkeypatch.setenv("LAYERTOUR_DEVICE", "cpu")
    assert resolve("auto").name == "cpu" and resolve("auto").reason == "requested"
    monkeypatch.setenv("LAYERTOUR_DEVICE", "cuda")
    device._resolve.cache_clear()
    if gpu_status()[0]:
        assert resolve("auto").is_cuda
    else:
        with pytest.raises(CudaUnavailableError):
            resolve("auto")
    assert resolve("cpu").name == "cpu"  # an explicit choice wins over the environment


def test_unknown_names_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="device='tpu' is not one of auto, cuda, cpu"):
        resolve("tpu")
    monkeypatch.setenv("LAYERTOUR_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="LAYERTOUR_DEVICE='gpu0'"):
        resolve("auto")


def test_host_helpers_on_numpy(rng):
    a = rng.standard_normal((7, 3))
    assert array_module(a) is np and array_module(a, [1, 2], 3.0) is np and array_module() is np
    assert not is_cupy_array(a)
    h = to_host(a)
    assert h is a or np.shares_memory(h, a)  # no copy for host arrays
    assert isinstance(to_host([1, 2]), np.ndarray)
    out = like([[1.0, 2.0]], a)
    assert isinstance(out, np.ndarray) and out.tolist() == [[1.0, 2.0]]


def test_helpers_across_namespaces(rng, xp):
    a = xp.asarray(rng.standard_normal((5, 4)))
    assert array_module(a) is xp and array_module(np.zeros(2), a) is xp
    h = to_host(a)
    assert type(h) is np.ndarray
    back = like(h, a)
    assert type(back) is type(a)
    np.testing.assert_array_equal(to_host(back), h)


def test_numpy_callers_never_import_cupy():
    code = ("import sys, numpy as np\n"
            "from engine.device import array_module, to_host, like, is_cupy_array\n"
            "a = np.ones(3); array_module(a); to_host(a); like(a, a); is_cupy_array(a)\n"
            "assert 'cupy' not in sys.modules, 'cupy was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
