"""engine.activations: the pooling rule, the memory planner and one-pass hooked recording."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch import nn  # noqa: E402

from engine.activations import MemoryBudgetError, plan_groups, pool, pooled_dim, pooled_width, record  # noqa: E402
from engine.device import resolve  # noqa: E402
from engine.inputs import tensor_inputs  # noqa: E402
from engine.models import PRESETS, LayerSpec, load_model, resolve_layers  # noqa: E402

# The study's UMAP input dimension per GoogLeNet layer (anchors-umap-tour.md §C.2, FairFace log).
GOOGLENET_DIMS = [768, 16384, 16384, 16384, 49152, 49152, 50176, 48000, 48000, 51200, 51200, 51200,
                  42768, 40768, 40768, 40768, 50176, 1024, 1024, 1000, 1000]
CPU = resolve("cpu")


def _records(*args, **kw):
    return {spec.id: np.asarray(a) for spec, a in record(*args, backend=CPU, progress=False, **kw)}


@pytest.fixture(scope="module")
def googlenet():
    torch.manual_seed(0)
    model, name = load_model("googlenet", weights="none")
    return model, name


def _images(rng, n, size=224):
    return torch.from_numpy(rng.standard_normal((n, 3, size, size)).astype(np.float32))


def test_pooled_width_rule():
    assert pooled_width(3) == 16 and pooled_width(512) == 10 and pooled_width(528) == 9
    assert pooled_width(10**6) == 1  # C > max_dim: w clamps to 1
    with pytest.raises(ValueError, match="c=0"):
        pooled_width(0)


def test_pooled_dim_invariants(rng):
    for _ in range(200):
        c, h, w = (int(v) for v in rng.integers(1, 300, size=3))
        max_dim = int(rng.integers(16, 60000))
        d = pooled_dim(c, h, w, max_dim, 16)
        if c * h * w <= max_dim:
            assert d == c * h * w
        else:
            k = min(16, int(np.floor(np.sqrt(max_dim / c)))) or 1
            assert d == c * k * k and d <= max(max_dim, c)
            t = torch.zeros(1, c, h, w)
            assert pool(t, max_dim, 16).shape == (1, d)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_pool_matches_block_reduction(rng, mode):
    # 600·20·20 > 60,000 -> w = ⌊√100⌋ = 10: adaptive pooling of 20×20 to 10×10 is a 2×2 block reduction.
    x = rng.standard_normal((3, 600, 20, 20))
    got = pool(torch.from_numpy(x.astype(np.float32)), max_dim=60000, max_width=16, mode=mode).numpy()
    blocks = x.reshape(3, 600, 10, 2, 10, 2)
    ref = blocks.mean(axis=(3, 5)) if mode == "avg" else blocks.max(axis=(3, 5))
    np.testing.assert_allclose(got, ref.reshape(3, -1), rtol=1e-5, atol=1e-6)
    small = rng.standard_normal((2, 5, 3, 3)).astype(np.float32)  # under max_dim: flattened unchanged
    np.testing.assert_array_equal(pool(torch.from_numpy(small), mode=mode).numpy(), small.reshape(2, -1))
    with pytest.raises(ValueError, match="pooling"):
        pool(torch.from_numpy(small), mode="median")


def test_googlenet_pooled_dimension_table(googlenet, rng):
    model, name = googlenet
    layers = resolve_layers(model, "study", name)
    # Independent raw shapes from plain hooks, then the rule.
    shapes = {}
    hooks = [getattr(model, s.name).register_forward_hook(
        lambda m, i, o, key=s.name: shapes.__setitem__(key, tuple(o.shape[1:])))
        for s in layers if s.kind == "module"]
    x = _images(rng, 1)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    expected = []
    for s in layers:
        shp = (3, 224, 224) if s.kind == "input" else shapes["avgpool" if s.kind == "flatten" else
                                                             ("fc" if s.kind == "softmax" else s.name)]
        expected.append(pooled_dim(*shp) if len(shp) == 3 else int(np.prod(shp)))
    assert expected == GOOGLENET_DIMS
    got = _records(model, tensor_inputs(x), layers)
    assert [got[s.id].shape for s in layers] == [(1, d) for d in GOOGLENET_DIMS]


def test_one_pass_equals_prefix_runs(googlenet, rng):
    """Recording all 21 study layers in one pass equals re-running each network prefix (the study)."""
    model, name = googlenet
    layers = resolve_layers(model, "study", name)
    x = _images(rng, 3)
    got = _records(model, tensor_inputs(x), layers, batch_size=2)
    order = [m for m, _ in model.named_children() if m not in ("aux1", "aux2")]
    with torch.no_grad():
        h, ref = x, {"0-Input": x}
        for mname in order:
            h = getattr(model, mname)(h)
            ref[mname] = h
            if mname == "avgpool":
                h = torch.flatten(h, 1)
        logits = h
    for s in layers:
        if s.kind == "input":
            r = ref["0-Input"]
        elif s.kind == "flatten":
            r = torch.flatten(ref["avgpool"], 1)
        elif s.kind == "softmax":
            r = torch.softmax(logits, dim=1)
        else:
            r = ref[s.name]
        if r.ndim == 4 and r[0].numel() > 51200:
            k = int(np.sqrt(got[s.id].shape[1] // r.shape[1]))
            r = torch.nn.functional.adaptive_avg_pool2d(r, k)
        np.testing.assert_allclose(got[s.id], r.reshape(3, -1).numpy(), rtol=1e-4, atol=1e-5, err_msg=s.id)
    np.testing.assert_allclose(got["20-Softmax"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(got["18-Flatten"], got["17-AdaptiveAvgPool2d"])


class Custom(nn.Module):
    """A small network with nested names and an in-place ReLU after a norm layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.body = nn.ModuleDict({"proj": nn.Conv2d(4, 6, 1), "act": nn.Tanh()})
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 8 * 8, 5))

    def forward(self, x):
        h = self.stem(x)
        h = self.body["act"](self.body["proj"](h))
        return self.head(h)


def _custom(seed=0):
    torch.manual_seed(seed)
    m = Custom()
    with torch.no_grad():  # non-trivial BN statistics so that bn outputs have both signs
        m.stem[1].running_mean.uniform_(-0.5, 0.5)
        m.stem[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_hooks_on_named_modules_of_custom_model(rng):
    m = _custom()
    x = torch.from_numpy(rng.standard_normal((5, 2, 8, 8)).astype(np.float32))
    layers = resolve_layers(m, "input,stem.1,stem.2,body.proj,body.act,head.1,softmax")
    assert [s.id for s in layers] == ["0-Input", "1-BatchNorm2d", "2-ReLU", "3-Conv2d", "4-Tanh", "5-Linear",
                                      "6-Softmax"]
    got = _records(m, tensor_inputs(x), layers, batch_size=2)
    with torch.no_grad():
        bn = m.stem[1](m.stem[0](x))
        relu = torch.relu(bn)
        proj = m.body["proj"](relu)
        act = torch.tanh(proj)
        logits = m.head(act)
    refs = [x, bn, relu, proj, act, logits, torch.softmax(logits, 1)]
    for s, r in zip(layers, refs):
        np.testing.assert_allclose(got[s.id], r.reshape(5, -1).numpy(), rtol=1e-5, atol=1e-6, err_msg=s.id)
    assert got["1-BatchNorm2d"].min() < 0  # the in-place ReLU after it did not clobber the recording


def test_inplace_relu_does_not_clobber_resnet_bn1(rng):
    torch.manual_seed(1)
    model, name = load_model("resnet50", weights="none")
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.2, 0.2)
    layers = resolve_layers(model, "study", name)
    assert len(layers) == 25
    x = _images(rng, 2, size=64)
    got = _records(model, tensor_inputs(x), layers)
    assert got["2-BatchNorm2d"].min() < 0
    assert got["3-ReLU"].min() >= 0
    with torch.no_grad():
        bn1 = torch.nn.functional.adaptive_avg_pool2d(model.bn1(model.conv1(x)), 16)  # 64·32² > 51,200
    np.testing.assert_allclose(got["2-BatchNorm2d"], bn1.reshape(2, -1).numpy(), rtol=1e-5, atol=1e-6)
    assert [spec.id for spec in PRESETS["resnet50"]] == list(got)


def test_batch_size_does_not_change_results(rng):
    m = _custom()
    x = torch.from_numpy(rng.standard_normal((7, 2, 8, 8)).astype(np.float32))
    layers = resolve_layers(m, "stem.2,body.act,head.1")
    a = _records(m, tensor_inputs(x), layers, batch_size=1)
    b = _records(m, tensor_inputs(x), layers, batch_size=64)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_plan_groups_invariants(rng):
    ids = [f"{i}-L" for i in range(30)]
    dims = dict(zip(ids, (int(d) for d in rng.integers(1, 5000, size=30))))
    n = int(rng.integers(10, 1000))
    budget = int(n * 4 * max(dims.values()) * rng.uniform(1.0, 4.0))
    groups = plan_groups(dims, n, budget)
    assert [i for g in groups for i in g] == ids
    sizes = [sum(n * dims[i] * 4 for i in g) for g in groups]
    assert all(s <= budget for s in sizes)
    for g, nxt in zip(groups, groups[1:]):  # greedy: the next layer did not fit
        assert sum(n * dims[i] * 4 for i in g) + n * dims[nxt[0]] * 4 > budget
    assert plan_groups(dims, n, 10**15) == [ids]
    with pytest.raises(MemoryBudgetError, match=f"{n * 4 * 5000:,} bytes"):
        plan_groups({"7-Big": 5000}, n, n * 4 * 5000 - 1)


def _count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda mod, inp: calls.append(inp[0].shape[0]))
    return calls


def test_planner_groups_make_several_passes_and_skip(rng):
    m = _custom()
    x = torch.from_numpy(rng.standard_normal((6, 2, 8, 8)).astype(np.float32))
    layers = resolve_layers(m, "input,stem.0,stem.2,body.proj,head.1")
    whole = _records(m, tensor_inputs(x), layers)
    calls = _count_forwards(m)
    # stem.0/stem.2 are 4·8·8 = 256-D, body.proj 384-D: a budget of one 384-D layer forces one group each.
    budget = 6 * 384 * 4
    split = _records(m, tensor_inputs(x), layers, batch_size=4, memory_budget=budget)
    # Groups [input, stem.0], [stem.2], [body.proj], [head.1]: 1 dry-run forward + 4 groups × 2 batches.
    assert len(calls) == 1 + 4 * 2
    for k in whole:
        np.testing.assert_allclose(split[k], whole[k], rtol=1e-6)
    calls.clear()
    part = _records(m, tensor_inputs(x), layers, batch_size=4, memory_budget=budget,
                    skip=["1-Conv2d", "body.proj"])
    assert list(part) == ["0-Input", "2-ReLU", "4-Linear"]
    assert len(calls) == 1 + 2 * 2
    calls.clear()
    assert list(_records(m, tensor_inputs(x), layers[:1])) == ["0-Input"] and calls == []
    with pytest.raises(ValueError, match="skip names unknown"):
        _records(m, tensor_inputs(x), layers, skip=["nope"])


def test_nan_activation_names_layer(rng):
    class LogNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Identity()
            self.log = nn.Identity()

        def forward(self, x):
            return self.log(torch.log(self.lin(x)))

    x = np.abs(rng.standard_normal((4, 1, 3, 3))).astype(np.float32) + 0.1
    x[2, 0, 1, 1] = -1.0  # log of a negative number: NaN in input 2 only
    m = LogNet()
    layers = [LayerSpec("0-Identity", "lin"), LayerSpec("1-Identity", "log")]
    gen = record(m, tensor_inputs(x), layers, backend=CPU, progress=False)
    spec, first = next(gen)
    assert spec.id == "0-Identity" and np.isfinite(first).all()
    with pytest.raises(ValueError, match=r"layer 1-Identity \(log\).*1 inputs.*input 2"):
        next(gen)


class OOMAbove(nn.Module):
    """Refuses batches above ``limit`` rows the way the CUDA allocator does (torch.OutOfMemoryError)."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2)

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch {x.shape[0]})")
        return self.b(self.a(x.flatten(1)))


def test_out_of_memory_retries_with_smaller_batches(rng):
    torch.manual_seed(2)
    x = torch.from_numpy(rng.standard_normal((9, 1, 2, 2)).astype(np.float32))
    m = OOMAbove(limit=2)
    layers = [LayerSpec("0-Linear", "a"), LayerSpec("1-Linear", "b")]
    got = _records(m, tensor_inputs(x), layers, batch_size=8)
    with torch.no_grad():
        a = m.a(x.flatten(1))
        ref = {"0-Linear": a, "1-Linear": m.b(a)}
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k].numpy(), rtol=1e-5, atol=1e-6)  # float32, other batch sizes
    with pytest.raises(MemoryBudgetError, match="dry run on a single input"):
        _records(OOMAbove(limit=0), tensor_inputs(x), layers)

    class Flaky(OOMAbove):  # passes the dry run, then fails at every batch size
        calls = 0

        def forward(self, x):
            Flaky.calls += 1
            if Flaky.calls > 1:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return super().forward(x)

    with pytest.raises(MemoryBudgetError, match=r"layer \d-Linear.*batch size 1.*bytes"):
        _records(Flaky(limit=100), tensor_inputs(x), layers, batch_size=4)


def test_bad_layers_and_inputs(rng):
    m = _custom()
    x = torch.from_numpy(rng.standard_normal((3, 2, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="no module named 'nope'.*stem.0"):
        _records(m, tensor_inputs(x), [LayerSpec("0-X", "nope")])
    with pytest.raises(ValueError, match="flatten layer needs a module layer"):
        _records(m, tensor_inputs(x), [LayerSpec("0-Flatten", "flatten", "flatten")])
    with pytest.raises(ValueError, match="batch_size"):
        _records(m, tensor_inputs(x), [LayerSpec("0-Conv2d", "stem.0")], batch_size=0)
    unused = Custom()
    unused.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="never ran"):
        _records(unused.eval(), tensor_inputs(x), [LayerSpec("0-Linear", "extra")])


@pytest.mark.gpu
def test_record_on_cuda_matches_cpu(googlenet, rng):
    import cupy

    model, name = googlenet
    layers = resolve_layers(model, "study", name)
    x = _images(rng, 3)
    cpu = _records(model, tensor_inputs(x), layers, batch_size=2)
    out = list(record(model, tensor_inputs(x), layers, backend=resolve("cuda"), batch_size=2, progress=False))
    model.cpu()
    assert [s.id for s, _ in out] == [s.id for s in layers]
    for spec, arr in out:
        assert isinstance(arr, cupy.ndarray) and arr.dtype == cupy.float32
        np.testing.assert_allclose(cupy.asnumpy(arr), cpu[spec.id], rtol=2e-3, atol=2e-3, err_msg=spec.id)
