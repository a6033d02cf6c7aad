"""Proxy-task data: shipped sets, .npz and image folders, deterministic splits, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from nas.data import load


def test_mnist5k_is_shuffled_split_and_resized():
    d = load("mnist5k", 32, limit=600, seed=1)
    assert d.x_train.shape[1:] == (32, 32, 3) and d.x_train.dtype == np.float32
    assert len(d.x_val) == 120 and len(d.x_train) == 480 and d.num_classes == 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert len(np.unique(d.y_val)) >= 8  # shuffled: the sorted-by-label order is gone
    again = load("mnist5k", 32, limit=600, seed=1)
    assert (again.y_val == d.y_val).all() and not (load("mnist5k", 32, limit=600, seed=2).y_val == d.y_val).all()


def test_digits_and_npz(tmp_path):
    d = load("digits", 16, channels=1)
    assert d.x_train.shape[1:] == (16, 16, 1) and len(d.y_train) + len(d.y_val) == 1797
    x = np.random.default_rng(0).integers(0, 255, (40, 20, 20), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    n = load(f"npz:{tmp_path / 'd.npz'}", 24)
    assert n.x_train.shape[1:] == (24, 24, 3) and n.num_classes == 4


def test_bad_data_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 8, 8)))
    np.savez(tmp_path / "single.npz", x=np.zeros((10, 8, 8)), y=np.zeros(10, dtype=np.int64))
    cases = [("imagenet", "unknown 'imagenet'; allowed: mnist5k, digits"),
             ("npz:/nope.npz", "does not exist"),
             (f"npz:{tmp_path / 'bad.npz'}", "must hold arrays 'x' and 'y', has images"),
             (f"npz:{tmp_path / 'single.npz'}", "has 1 class; a classifier needs at least 2"),
             (f"folder:{tmp_path / 'empty'}", "has 0 class sub-folder"),
             (f"folder:{one}", "has 1 class sub-folder"),
             ("folder:/no/such/dir", "does not exist")]
    for source, message in cases:
        with pytest.raises(ValueError, match=message):
            load(source, 32)
    with pytest.raises(ValueError, match="data.val_fraction"):
        load("digits", 32, val_fraction=1.5)


def test_image_folder(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    for label in ("ants", "bees"):
        (tmp_path / label).mkdir()
        for i in range(3):
            keras.utils.save_img(tmp_path / label / f"{i}.png", rng.integers(0, 255, (40, 30, 3)).astype(np.uint8))
    d = load(f"folder:{tmp_path}", 32, val_fraction=0.34)
    assert d.num_classes == 2 and len(d.y_train) + len(d.y_val) == 6 and d.x_val.shape[1:] == (32, 32, 3)
