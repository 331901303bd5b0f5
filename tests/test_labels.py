"""Cycle labels (ls.data.labels)."""

from __future__ import annotations

import numpy as np
import pytest

from ls.data.labels import (
    binary_from_four_class,
    bits_from_four_class,
    class_names,
    cycle_labels,
    four_class_from_bits,
    target_names,
)

# Every (crackle, wheeze) combination, and the label each mode must give (written out by hand).
CRACKLES = [0, 1, 0, 1]
WHEEZES = [0, 0, 1, 1]


def test_four_class_labels():
    y = cycle_labels(CRACKLES, WHEEZES, n_cls=4, multi_label=False)
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 3]  # normal, crackle, wheeze, both


def test_two_class_labels():
    y = cycle_labels(CRACKLES, WHEEZES, n_cls=2, multi_label=False)
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 1, 1]


def test_multi_label_targets_are_the_bits():
    y = cycle_labels(CRACKLES, WHEEZES, n_cls=4, multi_label=True)
    assert y.dtype == np.float32 and y.shape == (4, 2)
    assert y.tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_multi_label_with_two_classes_is_a_config_error():
    # The reference turned every abnormal cycle into "crackle" here (defect 11.2-2); this is refused.
    with pytest.raises(ValueError, match="multi_label=true needs dataset.n_cls=4"):
        cycle_labels(CRACKLES, WHEEZES, n_cls=2, multi_label=True)


@pytest.mark.parametrize("n_cls", [0, 3, 5])
def test_unsupported_class_counts_are_rejected(n_cls):
    with pytest.raises(ValueError, match="n_cls must be 2"):
        cycle_labels(CRACKLES, WHEEZES, n_cls=n_cls, multi_label=False)


def test_bad_bits_are_rejected():
    with pytest.raises(ValueError, match="crackles flags must be 0 or 1"):
        cycle_labels([0, 2], [0, 0], n_cls=4, multi_label=False)
    with pytest.raises(ValueError, match="differ in length"):
        four_class_from_bits([0, 1], [0])


def test_conversions_between_views():
    pairs = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    assert four_class_from_bits(pairs).tolist() == [0, 1, 2, 3]  # [N, 2] form, e.g. thresholded predictions
    np.testing.assert_array_equal(bits_from_four_class([0, 1, 2, 3]), pairs.astype(np.float32))
    assert binary_from_four_class([0, 1, 2, 3]).tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError):
        bits_from_four_class([4])


def test_labels_accept_pandas_columns():
    import pandas as pd

    frame = pd.DataFrame({"Crackles": CRACKLES, "Wheezes": WHEEZES})
    assert cycle_labels(frame["Crackles"], frame["Wheezes"], 4, False).tolist() == [0, 1, 2, 3]


def test_class_and_target_names():
    assert class_names(4) == ["normal", "crackle", "wheeze", "both"]
    assert class_names(2) == ["normal", "abnormal"]
    assert class_names(4, multi_label=True) == class_names(4)  # multi-label models are evaluated on 4 classes
    assert target_names(4, multi_label=True) == ["crackle", "wheeze"]
    assert target_names(2, multi_label=False) == ["normal", "abnormal"]
