"""The original UMAP Tour study's on-disk layout, in (``import_umap_tour``) and out (``export_umap_tour``).

One study directory per model (see ../shared/data/umap-tour/README.md)::

    <model>/schema.json          {"labels": {"id": "labels-coarse", ...}, "layers": [{"id", "shape", ...}]}
    <model>/<id>.bin             float32 little-endian row-major [N, p] per layer
    <model>/labels.bin           uint16 [N] fine label codes        -> categorical attribute ``label``
    <model>/labels-coarse.bin    uint16 [N] coarse label codes      -> categorical attribute ``label_coarse``
    <model>/attributes.csv       index, label, label_coarse, confidence, error (one row per image)
    meta-<model>-<p>D.json       beside the directory: attribute types, category order, extents

Several directories become several models of one bundle; they must embed the same N images, so
their label files and categorical CSV columns must agree. Continuous CSV columns that differ
between models (a model's own confidence, error) become one attribute per model, named
``<model>.<column>``. Schema and meta fields the bundle has no place for are kept in the model's
and layers' ``meta["umap_tour"]`` so that export writes them back; exported layer files are
byte-identical to the imported ones. Layer files are memory-mapped and streamed into the bundle
one chunk at a time (host memory only).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.align import align_models
from engine.files import NotRegularFileError, open_regular, read_regular
from engine.store import (
    BundleError,
    BundleWriter,
    is_valid_layer_id,
    is_valid_name,
    load_bundle,
    text_problem,
)
from engine.versions import versions

log = logging.getLogger("layertour")

LABEL_FILES = {"labels.bin": "label", "labels-coarse.bin": "label_coarse"}
_KNOWN_KINDS = {"label": "categorical", "label_coarse": "categorical", "confidence": "continuous",
                "error": "continuous"}

__all__ = ["import_umap_tour", "export_umap_tour", "LABEL_FILES"]

_JSON_LIMIT = 64 * 2**20
_LABEL_FILE = re.compile(r"^labels[A-Za-z0-9_.+-]{0,190}\.bin\Z")


@dataclass(frozen=True)
class _Column:
    """One per-image attribute of one study directory (host arrays)."""

    name: str
    kind: str
    values: np.ndarray                # (N,) int64 codes or float32 values
    categories: list[str] | None
    extent: list | None
    sources: tuple[Path, ...]         # files it was read from (for error messages)


@dataclass(frozen=True)
class _Study:
    path: Path
    name: str
    schema: dict                      # schema.json without "layers"
    layers: list[dict]                # schema "layers" entries, network order
    n: int
    dim: int
    meta: dict | None
    meta_path: Path | None
    columns: dict[str, _Column] = field(default_factory=dict)
    csv_columns: list[str] = field(default_factory=list)
    label_files: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# reading a study directory


def _read_json(path: Path, what: str):
    if not (path.exists() or path.is_symlink()):
        raise BundleError(f"{path}: missing ({what})")
    try:
        return json.loads(read_regular(path, limit=_JSON_LIMIT))
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
    except OSError as exc:
        raise BundleError(f"{path}: unreadable ({exc.strerror or exc})") from exc


def _open_text(path: Path):
    """A regular file opened for CSV reading; BundleError naming it otherwise (a FIFO never blocks)."""
    try:
        return open_regular(path, "r", newline="", encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"{path}: unreadable ({exc.strerror or exc})") from exc


def _text(value, path, what: str, multiline: bool = False) -> None:
    why = text_problem(value, multiline=multiline)
    if why is not None:
        raise BundleError(f"{path}: {what} {value!r:.60} {why}")


def _read_schema(d: Path) -> tuple[dict, list[dict], int, int]:
    path = d / "schema.json"
    schema = _read_json(path, "every study directory needs a schema.json")
    layers = schema.get("layers") if isinstance(schema, dict) else None
    if not isinstance(layers, list) or not layers:
        raise BundleError(f"{path}: needs a non-empty list 'layers'")
    shapes = []
    for i, e in enumerate(layers):
        shape = e.get("shape") if isinstance(e, dict) else None
        lid = e.get("id") if isinstance(e, dict) else None
        if not is_valid_layer_id(lid):
            raise BundleError(f"{path}: layers[{i}].id {lid!r} is missing or not a usable file name")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
            raise BundleError(f"{path}: layers[{i}] ({lid}) needs shape [N, p] of positive ints, "
                              f"got {shape!r}")
        shapes.append(tuple(shape))
    ids = [e["id"] for e in layers]
    if len(set(ids)) != len(ids):
        raise BundleError(f"{path}: duplicate layer ids")
    n, dim = shapes[0]
    for e, s in zip(layers, shapes):
        if s[0] != n:
            raise BundleError(f"{path}: layer row counts disagree: {layers[0]['id']} has {n} rows, "
                              f"{e['id']} has {s[0]}")
        if s[1] != dim:
            raise BundleError(f"{path}: layer dimensions disagree: {layers[0]['id']} has p={dim}, "
                              f"{e['id']} has p={s[1]}")
    lab = schema.get("labels")
    if isinstance(lab, dict) and isinstance(lab.get("shape"), int) and lab["shape"] != n:
        raise BundleError(f"{path}: labels.shape {lab['shape']} disagrees with the layers' {n} rows")
    return {k: v for k, v in schema.items() if k != "layers"}, layers, n, dim


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _find_meta(d: Path, name: str, dim: int) -> Path | None:
    """The ``meta-<model>-<p>D.json`` describing directory ``d`` (beside it or inside it), if any."""
    cands = sorted({*d.parent.glob("meta-*.json"), *d.glob("meta-*.json")})
    keyed = []
    for c in cands:
        m = re.match(r"^meta-(.+?)(?:-(\d+)D)?$", c.stem)
        if m and (m.group(2) is None or int(m.group(2)) == dim):
            keyed.append((c, _norm(m.group(1))))
    wanted = {_norm(d.resolve().name), _norm(name)}
    exact = [c for c, k in keyed if k in wanted]
    if len(exact) == 1:
        return exact[0]
    loose = [c for c, k in keyed if any(w and (w in k or k in w) for w in wanted)]
    if len(loose) == 1:
        return loose[0]
    if exact or loose:
        log.warning("%s: several meta files could describe it (%s); using none", d,
                    ", ".join(str(c.name) for c in exact or loose))
    return None


def _map_bin(path: Path, n: int, dim: int) -> np.memmap:
    """Memory-map a layer file as (n, dim) little-endian float32 after checking its size."""
    if not path.is_file():
        what = "not a regular file" if path.exists() else "layer file missing"
        raise BundleError(f"{path}: {what} (listed in schema.json)")
    size, want = path.stat().st_size, n * dim * 4
    if size != want:
        kind = "truncated" if size < want else "oversized"
        rows = size / (dim * 4)
        raise BundleError(f"{path}: {kind}: {size} bytes ({rows:g} rows of {dim} float32) where schema.json "
                          f"says [{n}, {dim}] = {want} bytes")
    return np.memmap(path, dtype="<f4", mode="r", shape=(n, dim))


def _read_codes(path: Path, n: int) -> np.ndarray:
    try:
        raw = read_regular(path, limit=2 * n)
    except OSError as exc:
        raise BundleError(f"{path}: unreadable, or more than {n} uint16 labels ({exc.strerror or exc})"
                          ) from exc
    if len(raw) != 2 * n:
        raise BundleError(f"{path}: {len(raw)} bytes where {n} uint16 labels ({2 * n} bytes) were expected")
    return np.frombuffer(raw, dtype="<u2").astype(np.int64)


def _read_csv(path: Path, n: int) -> tuple[list[str], dict[str, list[str]]]:
    """Columns (without the leading index column) and their raw string values, streamed by row."""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if not header:
                raise BundleError(f"{path}: empty file (a header row is expected)")
            indexed = header[0].strip() in ("", "index")
            cols = header[1:] if indexed else header
            if len(set(cols)) != len(cols) or not all(cols):
                raise BundleError(f"{path}: header has empty or duplicate column names: {header!r}")
            data: dict[str, list[str]] = {c: [] for c in cols}
            lists = list(data.values())
            k0 = 1 if indexed else 0
            for i, row in enumerate(reader):  # i counts records: a quoted field may span lines
                line = reader.line_num
                if len(row) != len(header):
                    raise BundleError(f"{path}: line {line} has {len(row)} fields where the header has "
                                      f"{len(header)}")
                if indexed and row[0] != str(i):
                    raise BundleError(f"{path}: line {line} has index {row[0]!r} where {i} was "
                                      "expected (rows must be in image order)")
                for lst, v in zip(lists, row[k0:]):
                    lst.append(v)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BundleError(f"{path}: unreadable CSV ({type(exc).__name__}: {exc})") from exc
    except (OSError, NotRegularFileError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from exc
    rows = len(lists[0]) if lists else 0
    if rows != n:
        raise BundleError(f"{path}: {rows} data rows where the layers have {n}")
    return cols, data


def _categorical(name, codes, names, cats, code_src, name_src) -> _Column:
    """Combine codes (from a .bin) and/or names (from the CSV) with a category order (from meta)."""
    srcs = tuple(p for p in (code_src, name_src) if p is not None)
    if cats is None and names is not None:
        if codes is not None:
            uniq, first = np.unique(codes, return_index=True)
            cats = [""] * (int(uniq.max()) + 1)
            for u, i in zip(uniq, first):
                cats[int(u)] = names[i]
        else:
            cats = list(dict.fromkeys(names))
    if codes is None:
        lookup = {c: i for i, c in enumerate(cats)}
        try:
            codes = np.fromiter((lookup[v] for v in names), dtype=np.int64, count=len(names))
        except KeyError as exc:
            raise BundleError(f"{name_src}: {name} {exc.args[0]!r} is not among the meta file's categories"
                              ) from None
    if cats is None:
        cats = [str(i) for i in range(int(codes.max()) + 1)]
    if codes.size and int(codes.max()) >= len(cats):
        raise BundleError(f"{code_src}: code {int(codes.max())} but only {len(cats)} {name} categories "
                          "are named")
    if names is not None:
        expect = np.asarray(cats, dtype=object)[codes]
        bad = np.flatnonzero(expect != np.asarray(names, dtype=object))
        if bad.size:
            i = int(bad[0])
            raise BundleError(f"{name_src} and {code_src}: {name} disagree at row {i} ({names[i]!r} in the "
                              f"CSV, code {int(codes[i])} = {expect[i]!r}); {bad.size} rows differ")
    for c in cats:
        _text(c, srcs[0] if srcs else name, f"a category of {name},", multiline=True)
    return _Column(name, "categorical", codes, list(cats), None, srcs)


def _continuous(name, raw, path, extent) -> _Column:
    try:
        vals = np.asarray(raw, dtype=np.float64).astype(np.float32)
    except ValueError:
        for i, v in enumerate(raw):
            try:
                float(v)
            except ValueError:
                raise BundleError(f"{path}: line {i + 2}, column {name!r}: {v!r} is not a number") from None
        raise
    if not np.isfinite(vals).all():
        i = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise BundleError(f"{path}: line {i + 2}, column {name!r}: {raw[i]!r} is not finite")
    return _Column(name, "continuous", vals, None, extent, (path,))


def _extent(ext, meta_path, col):
    """A meta file's ``extent`` of column ``col``: None, or two finite numbers lo <= hi."""
    if ext is None:
        return None
    ok = (isinstance(ext, list) and len(ext) == 2
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ext))
    if ok:
        try:
            lo, hi = float(ext[0]), float(ext[1])
            ok = bool(np.isfinite(lo) and np.isfinite(hi) and lo <= hi)
        except OverflowError:
            ok = False
    if not ok:
        raise BundleError(f"{meta_path}: attributes.{col}.extent must be [lo, hi] with finite lo <= hi, "
                          f"got {ext!r:.60}")
    return [lo, hi]


def _read_study(d: Path, name: str) -> _Study:
    if not d.is_dir():
        raise BundleError(f"{d}: not a directory (a study model directory with schema.json is expected)")
    schema, layers, n, dim = _read_schema(d)
    for e in layers:  # fail fast on missing / truncated / oversized files before writing anything
        _map_bin(d / f"{e['id']}.bin", n, dim)
    meta_path = _find_meta(d, name, dim)
    meta = None
    if meta_path is not None:
        meta = _read_json(meta_path, "meta file")
        if not isinstance(meta, dict) or not isinstance(meta.get("attributes", {}), dict):
            raise BundleError(f"{meta_path}: expected an object with an 'attributes' object")
        shape = meta.get("data_shape")
        if shape is not None and shape != [n, dim]:
            why = ("disagrees with" if isinstance(shape, list) and len(shape) == 2
                   and all(isinstance(x, int) and not isinstance(x, bool) for x in shape)
                   else "must be [N, p] (two integers) like")
            raise BundleError(f"{meta_path}: data_shape {shape!r:.60} {why} {d / 'schema.json'} "
                              f"([{n}, {dim}])")
    mattrs = (meta or {}).get("attributes", {})

    def order(col):
        spec = mattrs.get(col)
        o = spec.get("order") if isinstance(spec, dict) else None
        if o is not None and not (isinstance(o, list) and all(isinstance(x, str) for x in o)):
            raise BundleError(f"{meta_path}: attributes.{col}.order must be a list of strings")
        return o

    def kind(col, raw):
        spec = mattrs.get(col)
        if isinstance(spec, dict) and spec.get("type") in ("categorical", "continuous"):
            return spec["type"]
        if col in _KNOWN_KINDS:
            return _KNOWN_KINDS[col]
        try:
            np.asarray(raw[:1000], dtype=np.float64)
            return "continuous"
        except ValueError:
            return "categorical"

    codes: dict[str, tuple[np.ndarray, Path]] = {}
    label_files = {}
    for f in sorted(d.glob("labels*.bin")):
        attr = LABEL_FILES.get(f.name) or "label_" + re.sub(r"[^A-Za-z0-9]", "_", f.stem[len("labels-"):])
        if not is_valid_name(attr):
            continue
        codes[attr] = (_read_codes(f, n), f)
        label_files[f.name] = attr
    csv_path = d / "attributes.csv"
    cols, raw = _read_csv(csv_path, n) if csv_path.exists() else ([], {})
    columns: dict[str, _Column] = {}
    for col in cols:
        if not is_valid_name(col):
            raise BundleError(f"{csv_path}: column name {col!r:.60} is not usable as an attribute name")
        if kind(col, raw[col]) == "continuous" and col not in codes:
            spec = mattrs.get(col)
            ext = spec.get("extent") if isinstance(spec, dict) else None
            columns[col] = _continuous(col, raw[col], csv_path, _extent(ext, meta_path, col))
        else:
            c, src = codes.get(col, (None, None))
            columns[col] = _categorical(col, c, raw[col], order(col), src, csv_path)
    for attr, (c, src) in codes.items():
        if attr not in columns:
            columns[attr] = _categorical(attr, c, None, order(attr), src, None)
    return _Study(d, name, schema, layers, n, dim, meta, meta_path, columns, cols, label_files)


# ----------------------------------------------------------------------------------------------
# import


def _merge_columns(studies: list[_Study]) -> tuple[list[_Column], dict[str, dict[str, str]]]:
    """Bundle attributes, and for each model the map study column -> bundle attribute name."""
    out: dict[str, _Column] = {}
    per_model: dict[str, dict[str, str]] = {s.name: {} for s in studies}
    names = list(dict.fromkeys(c for s in studies for c in s.columns))
    for col in names:
        have = [(s, s.columns[col]) for s in studies if col in s.columns]
        s0, c0 = have[0]
        same = all(c.kind == c0.kind and np.array_equal(c.values, c0.values) for _, c in have[1:])
        if c0.kind == "categorical":
            for s, c in have[1:]:
                if c.kind != c0.kind:
                    raise BundleError(f"{c0.sources[0]} and {c.sources[0]}: {col} is categorical in one, "
                                      "continuous in the other")
                if not np.array_equal(c.values, c0.values):
                    i = int(np.flatnonzero(c.values != c0.values)[0])
                    a, b = ", ".join(map(str, c0.sources)), ", ".join(map(str, c.sources))
                    raise BundleError(f"{a} and {b}: {col} disagree (first at row {i}); the directories "
                                      "must hold the same images in the same order")
                if c.categories != c0.categories:
                    raise BundleError(f"{s0.meta_path or c0.sources[0]} and {s.meta_path or c.sources[0]}: "
                                      f"the category names of {col} disagree")
        if same:
            out[col] = c0
            for s, _ in have:
                per_model[s.name][col] = col
        else:
            for s, c in have:
                name = f"{s.name}.{col}"
                out[name] = _Column(name, c.kind, c.values, c.categories, c.extent, c.sources)
                per_model[s.name][col] = name
    shared = [c for c in out.values() if c.name in names]
    own = [out[a] for s in studies for col, a in per_model[s.name].items() if a not in names]
    return shared + own, per_model


def import_umap_tour(dirs, out, names=None, overwrite: bool = False) -> Path:
    """Import study directories (one model each, same N images) into the bundle ``out``.

    dirs : paths of study model directories; names : model names (default: directory names).
    Returns the bundle path. Raises BundleError naming the offending file; on any error no bundle
    and no staging directory is left behind (an existing bundle at ``out`` is kept).
    """
    t0 = time.perf_counter()
    dirs = [Path(d) for d in dirs]
    out = Path(out)
    if not dirs:
        raise BundleError("import: no study directories given")
    names = list(names) if names else [d.resolve().name for d in dirs]
    if len(names) != len(dirs):
        raise BundleError(f"import: {len(names)} --name values for {len(dirs)} directories")
    for nm in names:
        if not is_valid_name(nm):
            raise BundleError(f"import: model name {nm!r} is not valid (letters, digits, _ . + -)")
    if len(set(names)) != len(names):
        raise BundleError(f"import: model names must be distinct, got {names} (use --name)")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise BundleError(f"{out}: already exists (use --force to replace it)")
    studies = [_read_study(d, nm) for d, nm in zip(dirs, names)]
    s0 = studies[0]
    for s in studies[1:]:
        here, first = s.path / "schema.json", s0.path / "schema.json"
        if s.n != s0.n:
            raise BundleError(f"{here}: {s.n} rows but {first} has {s0.n}; the models of one bundle must "
                              "embed the same images")
        if s.dim != s0.dim:
            raise BundleError(f"{here}: p={s.dim} but {first} has p={s0.dim}")
    columns, per_model = _merge_columns(studies)
    writer = BundleWriter(out, n=s0.n, dim=s0.dim, overwrite=overwrite)
    try:
        for s in studies:
            keep_meta = {k: v for k, v in (s.meta or {}).items() if k != "attributes"}
            mattrs = {k: {kk: vv for kk, vv in v.items() if kk != "order"} if isinstance(v, dict) else v
                      for k, v in (s.meta or {}).get("attributes", {}).items()}
            writer.add_model(s.name, meta={"source": "umap-tour", "umap_tour": {
                "dir": str(s.path.resolve()), "schema": s.schema,
                "meta_file": s.meta_path.name if s.meta_path else None,
                "meta": keep_meta, "meta_attributes": mattrs, "csv_columns": s.csv_columns,
                "columns": per_model[s.name], "label_files": s.label_files}})
            for i, e in enumerate(s.layers):
                path = s.path / f"{e['id']}.bin"
                extra = {k: v for k, v in e.items() if k not in ("id", "shape")}
                try:
                    writer.write_layer(s.name, e["id"], _map_bin(path, s.n, s.dim), name=e["id"], index=i,
                                       meta={"umap_tour": extra})
                except BundleError as exc:
                    raise BundleError(f"{path}: {exc}") from None
        t_align = time.perf_counter()
        try:
            aligned = align_models({s.name: [writer.read_layer(s.name, e["id"]) for e in s.layers]
                                    for s in studies})
        except ValueError as exc:  # a constant layer, or values so large the products overflow
            raise BundleError(f"{', '.join(str(s.path) for s in studies)}: cannot align the layers "
                              f"({exc})") from None
        for s in studies:
            for e, a in zip(s.layers, aligned.alignments[s.name]):
                writer.set_alignment(s.name, e["id"], a.rotation, a.center)
        for (a, b), S in aligned.similarity.items():
            writer.set_similarity(a, b, S.astype(np.float32))
        t_align = time.perf_counter() - t_align
        labels = s0.schema.get("labels")
        default = labels.get("id") if isinstance(labels, dict) else None
        default_attr = s0.label_files.get(f"{default}.bin") if isinstance(default, str) else None
        for c in columns:
            ext = c.extent if c.kind == "continuous" else None
            if ext is not None and not (isinstance(ext, list) and len(ext) == 2):
                ext = None
            writer.set_attribute(c.name, c.values, c.kind, categories=c.categories, extent=ext,
                                 default=c.name == default_attr)
        writer.update_provenance({
            "source": {"format": "umap-tour", "dirs": {s.name: str(s.path.resolve()) for s in studies},
                       "meta_files": {s.name: str(s.meta_path) if s.meta_path else None for s in studies}},
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "alignment": {"method": "Procrustes chain per model; models joined at their first layer",
                          "consecutive_similarity": {k: [round(float(x), 6) for x in v]
                                                     for k, v in aligned.consecutive.items()}},
            "timings": {"import_seconds": round(time.perf_counter() - t0, 3),
                        "align_seconds": round(t_align, 3)}})
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


# ----------------------------------------------------------------------------------------------
# export


def _export_plan(bundle, model) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(label file -> attribute, [(csv column, attribute)]) for one model of ``bundle``.

    Label file names come from the bundle's model meta: each must be a plain ``labels*.bin`` file
    name (no directory part), else BundleError before anything is written.
    """
    label_files, csv_cols = _plan(bundle, model)
    for f in label_files:
        if not (isinstance(f, str) and _LABEL_FILE.match(f)):
            raise BundleError(f"{bundle.path}: model {model.name!r} names the label file {f!r:.80} in its "
                              "meta (umap_tour.label_files); export writes only plain labels*.bin names "
                              "inside the model directory")
    for c, _ in csv_cols:
        _text(c, bundle.path, f"model {model.name!r}: CSV column name")
    return label_files, csv_cols


def _dict(v) -> dict:
    """``v`` when it is a dict, else {} (model meta is data from disk: any JSON may be there)."""
    return v if isinstance(v, dict) else {}


def _plan(bundle, model) -> tuple[dict[str, str], list[tuple[str, str]]]:
    ut = _dict(model.meta.get("umap_tour")) or None
    attrs = bundle.attributes
    if ut and isinstance(ut.get("columns"), dict):
        cols = {k: v for k, v in ut["columns"].items() if isinstance(v, str)}
        label_files = {f: cols.get(a, a) for f, a in _dict(ut.get("label_files")).items()
                       if isinstance(a, str)}
        csv_list = ut.get("csv_columns") if isinstance(ut.get("csv_columns"), list) else []
        csv_cols = [(c, cols[c]) for c in csv_list if isinstance(c, str) and cols.get(c) in attrs]
        label_files = {f: a for f, a in label_files.items() if a in attrs}
        return label_files, csv_cols
    others = {m for m in bundle.models if m != model.name}
    csv_cols = []
    for a in attrs:
        prefix, _, rest = a.partition(".")
        if rest and prefix == model.name:
            csv_cols.append((rest, a))
        elif not (rest and prefix in others):
            csv_cols.append((a, a))
    label_files = {f: a for f, a in LABEL_FILES.items() if a in attrs and attrs[a].kind == "categorical"}
    return label_files, csv_cols


def _write_csv(path: Path, bundle, csv_cols) -> None:
    cols = []
    for _, a in csv_cols:
        at = bundle.attributes[a]
        if at.kind == "categorical":
            cols.append(np.asarray(at.categories, dtype=object)[np.asarray(at.values)].tolist())
        else:
            cols.append([str(v) for v in np.asarray(at.values, dtype=np.float32)])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["", *[c for c, _ in csv_cols]])
        for i, row in enumerate(zip(*cols)):
            w.writerow([i, *row])


def _meta_json(bundle, model, csv_cols, label_files) -> dict:
    ut = _dict(model.meta.get("umap_tour"))
    kept_attrs = _dict(ut.get("meta_attributes"))
    attrs = {}
    for col, a in [*csv_cols, *((LABEL_FILES.get(f, a), a) for f, a in label_files.items())]:
        if col in attrs:
            continue
        at = bundle.attributes[a]
        spec = dict(_dict(kept_attrs.get(col)))
        spec["type"] = at.kind
        if at.kind == "categorical":
            spec["order"] = at.categories
        else:
            spec.setdefault("extent", list(at.extent))
        attrs[col] = spec
    meta = {"data_shape": [bundle.n, bundle.dim], **_dict(ut.get("meta"))}
    meta["attributes"] = attrs
    return meta


def export_umap_tour(bundle_path, out_dir, models=None) -> list[Path]:
    """Write each model of the bundle in the study layout under ``out_dir``.

    Creates ``out_dir/<model>/`` (schema.json, <id>.bin float32 little-endian, labels*.bin uint16,
    attributes.csv) and ``out_dir/meta-<model>-<p>D.json``. Layer files are the stored embeddings
    byte for byte. Refuses to replace an existing model directory or meta file. Returns the model
    directories written.
    """
    bundle = load_bundle(bundle_path)
    out_dir = Path(out_dir)
    names = list(models) if models else list(bundle.models)
    for nm in names:
        if nm not in bundle.models:
            raise BundleError(f"{bundle.path}: no model {nm!r} (models: {', '.join(bundle.models)})")
    for nm in names:
        for p in (out_dir / nm, out_dir / f"meta-{nm}-{bundle.dim}D.json"):
            if p.exists():
                raise BundleError(f"{p}: already exists; export writes into a fresh place")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for nm in names:
        model = bundle.models[nm]
        label_files, csv_cols = _export_plan(bundle, model)
        stage = out_dir / f".{nm}.partial"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            ut = _dict(model.meta.get("umap_tour"))
            schema = dict(_dict(ut.get("schema")))
            if "labels" not in schema and bundle.default_attribute in label_files.values():
                f = next(f for f, a in label_files.items() if a == bundle.default_attribute)
                schema["labels"] = {"id": f[: -len(".bin")], "shape": bundle.n}
            schema["layers"] = []
            for lay in model.layers:
                extra = _dict(lay.meta.get("umap_tour"))
                schema["layers"].append({"id": lay.id, "shape": [bundle.n, bundle.dim], **extra})
                np.asarray(lay.embedding, dtype="<f4").tofile(stage / f"{lay.id}.bin")
            (stage / "schema.json").write_text(json.dumps(schema, indent=2), encoding="utf-8")
            for f, a in label_files.items():
                codes = np.asarray(bundle.attributes[a].values)
                if codes.size and int(codes.max()) > 0xFFFF:
                    raise BundleError(f"{bundle.path}: attribute {a} has codes beyond uint16 for {f}")
                codes.astype("<u2").tofile(stage / f)
            if csv_cols:
                _write_csv(stage / "attributes.csv", bundle, csv_cols)
            meta = _meta_json(bundle, model, csv_cols, label_files)
            meta_tmp = out_dir / f".meta-{nm}.partial.json"
            meta_tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
            # The meta file first: if the directory's rename then fails, the except below removes
            # the meta again, and no model directory without its meta is ever left behind.
            meta_final = out_dir / f"meta-{nm}-{bundle.dim}D.json"
            meta_tmp.rename(meta_final)
            try:
                stage.rename(out_dir / nm)
            except BaseException:
                meta_final.unlink(missing_ok=True)
                raise
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            (out_dir / f".meta-{nm}.partial.json").unlink(missing_ok=True)
            raise
        written.append(out_dir / nm)
    return written
