"""The held-out part of a split: the test part of a train/test split, the fold's validation part of k-fold."""

from __future__ import annotations

import pytest

from custom_nets.data import held_out_part, select_split

ENTRIES = [{"case": "a"}, {"case": "b"}, {"case": "c"}]


def test_part_names():
    assert held_out_part(None) == "test"
    assert held_out_part(0) == "val"  # fold 0 is a fold, not "no fold"
    assert held_out_part(4) == "val"


def test_selects_the_held_out_cases_of_each_split_kind():
    train_test = {"scheme": "80/20", "seed": 0, "train": ["b", "a"], "test": ["c"]}
    assert select_split(ENTRIES, train_test, part=held_out_part(None)) == [{"case": "c"}]
    two_fold = {"scheme": "2fold", "seed": 0, "folds": [{"train": ["a"], "val": ["b", "c"]},
                                                        {"train": ["b", "c"], "val": ["a"]}]}
    assert select_split(ENTRIES, two_fold, part=held_out_part(0), fold=0) == [{"case": "b"}, {"case": "c"}]
    assert select_split(ENTRIES, two_fold, part=held_out_part(1), fold=1) == [{"case": "a"}]
    with pytest.raises(ValueError, match="fold=None is not a fold index"):  # k-fold splits need their fold
        select_split(ENTRIES, two_fold, part="val", fold=None)
