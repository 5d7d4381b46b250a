"""engine.models: the study's presets, model loading and layer selection."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from torch import nn  # noqa: E402

from engine.models import PRESETS, LayerSpec, load_model, module_names, resolve_layers  # noqa: E402


def test_presets_match_study_files(study_data):
    for model in ("googlenet", "resnet50"):
        schema = json.loads((study_data / model / "schema.json").read_text())
        assert [s.id for s in PRESETS[model]] == [layer["id"] for layer in schema["layers"]]
        for spec in PRESETS[model]:
            assert (study_data / model / f"{spec.id}.bin").exists()


def test_preset_contents():
    g, r = PRESETS["googlenet"], PRESETS["resnet50"]
    assert len(g) == 21 and len(r) == 25
    assert [s.kind for s in g[:1] + g[-3:]] == ["input", "flatten", "module", "softmax"]
    assert g[6] == LayerSpec("6-Inception", "inception3a") and g[13].name == "inception4e"
    assert [s.name for s in r[5:21]] == [f"layer{a}.{b}" for a, n in ((1, 3), (2, 4), (3, 6), (4, 3))
                                         for b in range(n)]
    assert r[2] == LayerSpec("2-BatchNorm2d", "bn1")
    assert r[-1] == LayerSpec("24-Softmax", "softmax", "softmax")
    with pytest.raises(ValueError, match="kind"):
        LayerSpec("0-X", "x", "weird")


@pytest.fixture(scope="module")
def googlenet():
    torch.manual_seed(0)
    return load_model("googlenet", weights="none")


def test_load_googlenet_random(googlenet):
    model, name = googlenet
    assert name == "googlenet" and not model.training
    assert model.aux1 is None and model.aux2 is None  # aux_logits=False, as the study
    assert [s.id for s in resolve_layers(model, "study", name)] == [s.id for s in PRESETS["googlenet"]]


def test_load_state_dict_file(tmp_path, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    src, _ = load_model("resnet18", weights="none")
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    model, name = load_model("resnet18", weights=str(path))
    assert name == "resnet18" and not model.training
    for (k, a), b in zip(src.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    bad = tmp_path / "bad.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(ValueError, match="bad.pt does not fit"):
        load_model("resnet18", weights=str(bad))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model("resnet18", weights=str(tmp_path / "missing.pt"))


def test_load_factory_file(tmp_path, rng):
    src = tmp_path / "mynet.py"
    src.write_text("import torch.nn as nn\n\n"
                   "def make():\n"
                   "    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))\n")
    model, name = load_model(f"{src}:make", weights="none")
    assert name == "make" and isinstance(model, nn.Sequential) and not model.training
    weights = tmp_path / "w.pt"
    ref = {k: torch.from_numpy(rng.standard_normal(tuple(v.shape)).astype(np.float32))
           for k, v in model.state_dict().items()}
    torch.save(ref, weights)
    loaded, _ = load_model(f"{src}:make", weights=str(weights))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ref.items())
    with pytest.raises(ValueError, match="no callable 'nope'.*make"):
        load_model(f"{src}:nope")
    with pytest.raises(FileNotFoundError, match="absent.py"):
        load_model(f"{tmp_path / 'absent.py'}:make")


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'notanet'.*resnet50"):
        load_model("notanet", weights="none")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def test_resolve_layer_selections():
    net = Net()
    assert module_names(net) == ["features", "features.0", "features.1", "pool", "fc"]
    leaves = resolve_layers(net, "all-leaves")
    assert [(s.id, s.name) for s in leaves] == [("0-Conv2d", "features.0"), ("1-ReLU", "features.1"),
                                                ("2-AdaptiveAvgPool2d", "pool"), ("3-Linear", "fc")]
    sel = resolve_layers(net, " input, features , pool,flatten, fc,softmax ")
    assert [(s.id, s.kind) for s in sel] == [("0-Input", "input"), ("1-Sequential", "module"),
                                             ("2-AdaptiveAvgPool2d", "module"), ("3-Flatten", "flatten"),
                                             ("4-Linear", "module"), ("5-Softmax", "softmax")]
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*features.0, features.1, pool, fc"):
        resolve_layers(net, "features,conv9")
    with pytest.raises(ValueError, match="no study preset for model 'net'"):
        resolve_layers(net, "study", "net")
    with pytest.raises(ValueError, match="names layers twice"):
        resolve_layers(net, "fc,fc")
    with pytest.raises(ValueError, match="names no layer"):
        resolve_layers(net, " , ")


def test_preset_ids_keep_their_names(googlenet):
    model, name = googlenet
    sel = resolve_layers(model, "3-BasicConv2d,inception4a,20-Softmax", name)
    assert [(s.id, s.name) for s in sel] == [("3-BasicConv2d", "conv2"), ("1-Inception", "inception4a"),
                                             ("20-Softmax", "softmax")]
    with pytest.raises(ValueError, match="lacks the preset's modules"):
        resolve_layers(Net(), "study", "googlenet")


def test_stage_modules_import_cheaply():
    """Importing the recording/embedding modules loads no torch, CuPy, umap-learn or scikit-learn."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = "('torch', 'torchvision', 'cupy', 'umap', 'sklearn', 'cuml')"
    code = ("import sys, engine.models, engine.inputs, engine.activations, engine.embed; "
            f"print(sorted(m for m in {heavy} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.strip() == "[]"


def test_random_init_is_seeded_and_leaves_the_global_rng_alone(tmp_path):
    """Same spec + seed -> same weights in every process (resume and distributed runs rely on it)."""
    src = tmp_path / "seeded.py"
    src.write_text("import torch.nn as nn\n\ndef make():\n    return nn.Linear(6, 4)\n")
    before = torch.random.get_rng_state()
    a, _ = load_model(f"{src}:make", weights="none")
    b, _ = load_model(f"{src}:make", weights="none")
    c, _ = load_model(f"{src}:make", weights="none", seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    g1, _ = load_model("resnet18", weights="none")
    g2, _ = load_model("resnet18", weights="none")
    assert torch.equal(g1.conv1.weight, g2.conv1.weight)
