"""ImageFolder held-out split: ``data.test_dir`` unset accepts ``val/`` or ``test/``; errors name
the key."""

from __future__ import annotations

import pytest

from cld_lightning.data.errors import DatasetNotFoundError
from cld_lightning.data.synthetic import write_fake_imagefolder


@pytest.mark.parametrize("split", ["val", "test"])
def test_test_split_defaults_to_val_or_test(tmp_path, make_dm, split: str) -> None:
    write_fake_imagefolder(tmp_path, classes=3, per_class=[4, 3, 2], splits=("train", split))
    dm = make_dm("imagefolder", tmp_path, image_size=32)
    assert dm.num_classes == 3 and len(dm.test_dataset) == 9 and len(dm.memory_dataset) == 9


def test_val_is_preferred_when_both_exist(tmp_path, make_dm) -> None:
    write_fake_imagefolder(tmp_path, classes=2, per_class=4, splits=("train", "test"))
    write_fake_imagefolder(tmp_path, classes=2, per_class=1, splits=("val",))
    assert len(make_dm("imagefolder", tmp_path, image_size=32).test_dataset) == 2
    assert len(make_dm("imagefolder", tmp_path, image_size=32, test_dir="test").test_dataset) == 8


def test_no_held_out_split_names_data_test_dir(tmp_path, make_dm) -> None:
    write_fake_imagefolder(tmp_path, classes=2, per_class=2, splits=("train",))
    with pytest.raises(DatasetNotFoundError) as err:
        make_dm("imagefolder", tmp_path)
    msg = str(err.value)
    assert "data.test_dir" in msg and str(tmp_path / "val") in msg and str(tmp_path / "test") in msg


def test_explicit_missing_test_dir_names_the_key(tmp_path, make_dm) -> None:
    write_fake_imagefolder(tmp_path, classes=2, per_class=2, splits=("train", "test"))
    with pytest.raises(DatasetNotFoundError, match=r"data\.test_dir='holdout'"):
        make_dm("imagefolder", tmp_path, test_dir="holdout")


def test_missing_train_dir_names_the_key(tmp_path, make_dm) -> None:
    write_fake_imagefolder(tmp_path, classes=2, per_class=2, splits=("pretrain", "test"))
    with pytest.raises(DatasetNotFoundError, match=r"data\.train_dir='train'"):
        make_dm("imagefolder", tmp_path)
    assert make_dm("imagefolder", tmp_path, train_dir="pretrain", image_size=32).num_classes == 2
