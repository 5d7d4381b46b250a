"""Models and layer lists for recording: torchvision or user models, the study's layer presets.

A layer to record is a :class:`LayerSpec`: ``id`` (the file name in a bundle and in the study's
data, ``"<index>-<ModuleClass>"``), ``name`` (the module path in ``model.named_modules()``, or a
pseudo name) and ``kind``:

- ``"module"``  — the output of the named module (a forward hook);
- ``"input"``   — the model's input batch;
- ``"flatten"`` — ``torch.flatten(·, 1)`` of the pooled output of the nearest *preceding* module
  layer of the list (the study's Flatten after ``avgpool``);
- ``"softmax"`` — softmax over dim 1 of the model's output (the study's Softmax after ``fc``);
- ``"logits"``  — the model's output itself (a classifier's logits; any model's output tensor).

``PRESETS`` holds the study's exact lists (GoogLeNet 21 layers, ResNet-50 25 layers); their ids
equal the file names of the published data. torch is imported only inside the functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

KINDS = ("module", "input", "flatten", "softmax", "logits")
PSEUDO = {"input": "Input", "flatten": "Flatten", "softmax": "Softmax", "logits": "Logits"}


@dataclass(frozen=True)
class LayerSpec:
    """One layer to record: ``id`` ("3-BasicConv2d"), ``name`` ("conv2" or a pseudo name), ``kind``."""

    id: str
    name: str
    kind: str = "module"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"LayerSpec {self.id!r}: kind={self.kind!r} is not one of {', '.join(KINDS)}")


def _preset(entries: list[tuple[str, str]]) -> tuple[LayerSpec, ...]:
    specs = []
    for i, (cls, name) in enumerate(entries):
        kind = name if name in PSEUDO else "module"
        specs.append(LayerSpec(f"{i}-{cls}", name, kind))
    return tuple(specs)


_GOOGLENET = (
    [("Input", "input"), ("BasicConv2d", "conv1"), ("MaxPool2d", "maxpool1"), ("BasicConv2d", "conv2"),
     ("BasicConv2d", "conv3"), ("MaxPool2d", "maxpool2"), ("Inception", "inception3a"),
     ("Inception", "inception3b"), ("MaxPool2d", "maxpool3")]
    + [("Inception", f"inception4{c}") for c in "abcde"]
    + [("MaxPool2d", "maxpool4"), ("Inception", "inception5a"), ("Inception", "inception5b"),
       ("AdaptiveAvgPool2d", "avgpool"), ("Flatten", "flatten"), ("Linear", "fc"), ("Softmax", "softmax")]
)
_RESNET50 = (
    [("Input", "input"), ("Conv2d", "conv1"), ("BatchNorm2d", "bn1"), ("ReLU", "relu"),
     ("MaxPool2d", "maxpool")]
    + [("Bottleneck", f"layer{s}.{b}") for s, nb in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(nb)]
    + [("AdaptiveAvgPool2d", "avgpool"), ("Flatten", "flatten"), ("Linear", "fc"), ("Softmax", "softmax")]
)

#: The study's layer lists, by torchvision model name.
PRESETS: dict[str, tuple[LayerSpec, ...]] = {
    "googlenet": _preset(_GOOGLENET),
    "resnet50": _preset(_RESNET50),
}


def load_model(spec: str, weights: str = "DEFAULT", seed: int = 0):
    """Build a model in eval mode: ``(nn.Module, name)``.

    spec : a torchvision classification model name ("googlenet", "resnet50", ...) or
        ``"FILE.py:factory"`` (``factory()`` must return an ``nn.Module``).
    weights : ``"DEFAULT"`` (torchvision's pretrained weights, downloaded to the torch hub cache; for
        a file model: whatever the factory returns), ``"none"`` (random initialisation) or the path
        of a state-dict file (``torch.save(model.state_dict(), PATH)``; a dict with a
        ``"state_dict"`` or ``"model"`` entry also works).

    seed : seeds the random initialisation (``weights="none"``, or a factory's own init), so the
        same spec and seed give the same network in every process: a resumed or distributed run
        records the same activations as an uninterrupted one. The global torch RNG is left as it was.

    GoogLeNet is built without its auxiliary heads (``aux_logits=False``), as the study did.
    Raises ``ValueError`` for an unknown model name or factory, ``FileNotFoundError`` for a missing
    file, and ``ValueError`` naming the file when a state dict does not fit the model.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
            model, name = _load_factory(spec)
            if weights not in ("DEFAULT", "none"):
                _load_state(model, weights)
        else:
            model, name = _load_torchvision(spec, weights)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model {spec!r}: expected an nn.Module, got {type(model).__name__}")
    return model.eval(), name


def _load_factory(spec: str):
    path_s, factory = spec.rsplit(":", 1)
    path = Path(path_s)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found (from --model {spec!r})")
    mod_spec = importlib.util.spec_from_file_location(f"layertour_user_model_{path.stem}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise ValueError(f"model file {path}: not a Python source file (from --model {spec!r})")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ValueError(f"model file {path}, line {exc.lineno}: syntax error: {exc.msg} "
                         f"(from --model {spec!r})") from exc
    except Exception as exc:  # the user's module failed while being imported: say where
        raise ValueError(f"model file {path}: importing it raised {type(exc).__name__}: {exc} "
                         f"(from --model {spec!r})") from exc
    fn = getattr(module, factory, None)
    if not callable(fn):
        names = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise ValueError(f"model file {path}: no callable {factory!r} (callables: {', '.join(names)})")
    try:
        return fn(), factory
    except Exception as exc:
        raise ValueError(f"model file {path}: {factory}() raised {type(exc).__name__}: {exc}") from exc


def _load_torchvision(name: str, weights: str):
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    key = name.lower()
    if key not in available:
        raise ValueError(f"unknown model {name!r}: give FILE.py:factory or one of torchvision's "
                         f"classification models: {', '.join(available)}")
    kwargs = {}
    if weights == "DEFAULT":
        model = torchvision.models.get_model(key, weights="DEFAULT")  # googlenet drops aux heads itself
        return model, key
    if key == "googlenet":
        kwargs = {"aux_logits": False, "init_weights": True}
    model = torchvision.models.get_model(key, weights=None, **kwargs)
    if weights != "none":
        _load_state(model, weights, drop_prefixes=("aux1.", "aux2.") if key == "googlenet" else ())
    return model, key


def _load_state(model, path_s: str, drop_prefixes: tuple[str, ...] = ()) -> None:
    import torch

    path = Path(path_s)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found (give DEFAULT, none or a state-dict file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError,
            AttributeError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"--weights {path}: not a PyTorch weights file that can be loaded safely "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                         "give DEFAULT, none or a file written by torch.save(model.state_dict(), PATH)"
                         ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"weights file {path}: expected a state dict (names -> tensors), got "
                         f"{type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights file {path} does not fit the model: {exc}") from exc


def state_digest(module) -> str:
    """A short SHA-1 of ``module``'s state dict (names, dtypes, shapes, values; CPU copies): two
    modules with the same digest compute the same activations."""
    import torch

    h = hashlib.sha1()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def module_names(model) -> list[str]:
    """Every named sub-module path of ``model`` (``""``, the root, excluded), in registration order."""
    return [n for n, _ in model.named_modules() if n]


def resolve_layers(model, spec: str, model_name: str | None = None) -> list[LayerSpec]:
    """Turn a layer selection into ``LayerSpec`` s, in network order for presets.

    spec : ``"study"`` (the preset of ``model_name``; ``ValueError`` if there is none),
        ``"all-leaves"`` (every module without children, registration order) or comma-separated
        module names, preset ids (kept as in the preset) or pseudo names ``input``/``flatten``/
        ``softmax``. Other layers get ids ``"<index>-<ModuleClass>"``, index = position in the list.

    Unknown names raise ``ValueError`` listing the model's module names.
    """
    modules = dict(model.named_modules())
    del modules[""]
    preset = PRESETS.get((model_name or "").lower())
    spec = spec.strip()
    if spec == "study":
        if preset is None:
            raise ValueError(f"no study preset for model {model_name!r} (presets: {', '.join(PRESETS)}); "
                             "give --layers all-leaves or comma-separated module names")
        missing = [s.name for s in preset if s.kind == "module" and s.name not in modules]
        if missing:
            raise ValueError(f"model {model_name!r} lacks the preset's modules {missing}; "
                             f"available: {', '.join(modules)}")
        return list(preset)
    if spec == "all-leaves":
        tokens = [n for n, m in modules.items() if not any(True for _ in m.children())]
    else:
        tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise ValueError(f"layer selection {spec!r} names no layer")
    by_id = {s.id: s for s in preset} if preset else {}
    out = []
    for i, tok in enumerate(tokens):
        if tok in by_id:
            out.append(by_id[tok])
        elif tok in PSEUDO:
            out.append(LayerSpec(f"{i}-{PSEUDO[tok]}", tok, tok))
        elif tok in modules:
            out.append(LayerSpec(f"{i}-{type(modules[tok]).__name__}", tok, "module"))
        else:
            raise ValueError(f"unknown layer {tok!r} for model {model_name or type(model).__name__}; "
                             f"pseudo layers: input, flatten, softmax, logits; modules: {', '.join(modules)}")
    keys = [s.id for s in out] + [s.name for s in out if s.kind != "flatten"]
    dup = sorted({x for x in keys if keys.count(x) > 1})
    if dup:
        raise ValueError(f"layer selection {spec!r} names layers twice: {dup}")
    return out


def model_categories(spec: str, module=None) -> list[str] | None:
    """The class names of a model's outputs, in order, or None when it has none.

    A torchvision classification model: its weights' ``meta["categories"]`` (the same for every
    pretrained weights of a model; read from torchvision's tables, nothing is downloaded). A
    ``FILE.py:factory`` model: the module's ``categories`` attribute when it is a list of str.
    """
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        cats = getattr(module, "categories", None)
        return [str(c) for c in cats] if isinstance(cats, (list, tuple)) and cats else None
    try:
        import torchvision

        weights = torchvision.models.get_model_weights(spec.lower())
    except (ImportError, ValueError, KeyError):
        return None
    cats = weights.DEFAULT.meta.get("categories") if hasattr(weights, "DEFAULT") else None
    return [str(c) for c in cats] if cats else None


def imagenet_categories() -> list[str] | None:
    """torchvision's 1,000 ImageNet class names by class index (None without torchvision)."""
    try:
        import torchvision
    except ImportError:
        return None
    cats = torchvision.models.ResNet50_Weights.DEFAULT.meta.get("categories")
    return [str(c) for c in cats] if cats and len(cats) == 1000 else None
