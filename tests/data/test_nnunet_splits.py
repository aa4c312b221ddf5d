"""Our splits in nnU-Net's splits_final.json format: same cases, held-out cases as nnU-Net's validation."""

from __future__ import annotations

import json

import pytest

from custom_nets.data.nnunet_splits import nnunet_splits, write_nnunet_splits
from custom_nets.data.splits import make_splits


def test_holdout_split_is_one_fold_validating_on_the_test_cases(tmp_path):
    ids = [f"case_{i:03d}" for i in range(10)]
    splits = make_splits(ids, tmp_path / "splits.json", seed=0)
    out = write_nnunet_splits(tmp_path / "splits.json", tmp_path / "splits_final.json")
    folds = json.loads(open(out).read())
    assert folds == [{"train": splits["train"], "val": splits["test"]}]
    assert sorted(folds[0]["train"] + folds[0]["val"]) == ids and len(folds[0]["val"]) == 2


def test_kfold_and_low_data_keep_the_nested_training_order(tmp_path):
    ids = [f"c{i}" for i in range(10)]
    splits = make_splits(ids, tmp_path / "s.json", seed=1, scheme="5fold")
    folds = nnunet_splits(splits, low_data=3)
    assert len(folds) == 5
    for ours, theirs in zip(splits["folds"], folds):
        assert theirs == {"train": ours["train"][:3], "val": ours["val"]}


def test_bad_inputs_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the fine-tuning bundle"):
        write_nnunet_splits(tmp_path / "missing.json", tmp_path / "out.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        write_nnunet_splits(tmp_path / "bad.json", tmp_path / "out.json")
    with pytest.raises(ValueError, match="splits.json written by the fine-tuning bundle"):
        nnunet_splits({"cases": []})
