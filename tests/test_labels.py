"""engine.labels: class names from WordNet ids and the weights' categories, coarse tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.labels import (
    UNASSIGNED,
    CoarseTableError,
    coarse_groups,
    imagenet_classes,
    is_wnid,
    name_classes,
    normalize,
    read_coarse_table,
)

torchvision = pytest.importorskip("torchvision")
CATS = torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"]
WNIDS = [w for w, _ in imagenet_classes()]


def test_the_imagenet_table_is_sorted_wordnet_ids():
    assert len(WNIDS) == 1000 and WNIDS == sorted(WNIDS) and WNIDS[0] == "n01440764"
    assert imagenet_classes()[134] == ("n02012849", "crane")
    assert is_wnid("n03126707") and not is_wnid("n00000001")
    assert normalize("crane (bird)") == "crane bird" and normalize("great_white-shark") == "great white shark"
    assert normalize("Cardigan") != normalize("cardigan") and normalize("Cardigan", fold=True) == "cardigan"


def test_class_names_follow_the_weights_when_the_folders_are_the_models_classes():
    cn = name_classes(["n01440764", "n02012849"], CATS)
    assert cn.names == [CATS[0], CATS[134]] and cn.targets == [0, 134] and cn.imagenet == [0, 134]
    assert "weights' categories" in cn.source
    plain = name_classes(["n01440764", "n02012849"], None)  # no model classes: the table's names, no targets
    assert plain.names == ["tench", "crane"] and plain.targets is None and plain.imagenet == [0, 134]
    named = name_classes(["n02012849"], None, imagenet_names=CATS)
    assert named.names == [CATS[134]] and named.targets is None
    spelled = name_classes(["Goldfish", "tench"], CATS)  # folder names that are the categories, any case
    assert spelled.names == ["goldfish", "tench"] and spelled.targets == [1, 0]
    other = name_classes(["cat", "dog"], CATS)
    assert other.names == ["cat", "dog"] and other.targets is None and other.imagenet is None


def _table(tmp_path, text):
    p = tmp_path / "coarse.csv"
    p.write_text(text, encoding="utf-8-sig")
    return read_coarse_table(p)


def test_coarse_groups_resolve_names_that_fit_several_classes(tmp_path):
    # The study's spellings: "crane (bird)" and "crane", the dog "Cardigan" and the garment
    # "cardigan", "maillot" listed twice for the two maillot classes.
    table = _table(tmp_path, "category,labels\nbird,crane (bird),tench_not_here\ndog,Cardigan\n"
                             "clothing,cardigan,maillot,maillot\nvehicle,crane\n")
    wnids = ["n03126707", "n02012849", "n02963159", "n02113186", "n03710637", "n03710721", "n01440764"]
    cn = name_classes(wnids, CATS)
    codes, groups, unmatched = coarse_groups(cn, wnids, table)
    got = [groups[c] for c in codes]
    assert got == ["vehicle", "bird", "clothing", "dog", "clothing", "clothing", UNASSIGNED]
    assert groups == ["bird", "dog", "clothing", "vehicle", UNASSIGNED] and unmatched == [CATS[0]]


def test_coarse_tables_are_checked(tmp_path):
    with pytest.raises(CoarseTableError, match=r"line 3: class 'b' is also in group 'one' \(line 2\)"):
        _table(tmp_path, "category\none,a,b\ntwo,b\n")
    with pytest.raises(CoarseTableError, match="line 2: the first cell"):
        _table(tmp_path, "group\n,a\n")
    with pytest.raises(CoarseTableError, match="no groups"):
        _table(tmp_path, "category,labels\n")
    with pytest.raises(CoarseTableError, match="control characters"):
        _table(tmp_path, "one,a\x1bb\n")
    (tmp_path / "bad.csv").write_bytes(b"one,\xff\xfe\n")
    with pytest.raises(CoarseTableError, match="not UTF-8"):
        read_coarse_table(tmp_path / "bad.csv")
    with pytest.raises(CoarseTableError, match="cannot read it"):
        read_coarse_table(tmp_path / "missing.csv")


def test_the_study_table_gives_the_studys_coarse_groups(study_data):
    """Every one of the 1,000 classes lands in the coarse group of the study's own labels-coarse."""
    table = read_coarse_table(study_data / "imagenet_coarse_categories.csv")
    codes, groups, unmatched = coarse_groups(name_classes(WNIDS, CATS), WNIDS, table)
    fine = np.fromfile(study_data / "googlenet" / "labels.bin", dtype=np.uint16)
    coarse = np.fromfile(study_data / "googlenet" / "labels-coarse.bin", dtype=np.uint16)
    meta = json.loads((study_data / "meta-googlenet-15D.json").read_text())
    order = meta["attributes"]["label_coarse"]["order"]
    assert unmatched == [] and groups == order
    first = np.unique(fine, return_index=True)[1]
    np.testing.assert_array_equal(np.asarray(codes), coarse[first])
