"""ls.data.metadata.MetadataEncoder: fitted on train only, unknown id 0, child BMI rule, imputation, z-scores,
missing flags, encode_one and state round trip. References computed by hand with numpy."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from ls.data.metadata import MetadataEncoder, child_bmi
from ls.types import UNKNOWN_ID, UNKNOWN_TOKEN

NAN = math.nan


def _table(rows: list[tuple]) -> pd.DataFrame:
    cols = ["Device", "AuscLoc", "Age", "BMI", "CW", "CH", "CycleStart", "CycleEnd"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture
def train() -> pd.DataFrame:
    return _table([
        ("Meditron", "Al", 70.0, 30.0, NAN, NAN, 0.0, 2.0),
        ("AKGC417L", "Tc", 60.0, 20.0, NAN, NAN, 1.0, 4.0),
        ("AKGC417L", "Pr", 4.0, NAN, 16.0, 100.0, 0.5, 1.5),  # child BMI 16
        ("Meditron", "Al", NAN, NAN, NAN, NAN, 2.0, 3.0),  # age and BMI imputed
    ])  # fmt: skip


def test_vocabularies_from_training_rows_with_reserved_unknown(train):
    enc = MetadataEncoder().fit(train)
    assert enc.spec.factor("device").vocabulary == (UNKNOWN_TOKEN, "AKGC417L", "Meditron")
    assert enc.spec.factor("site").vocabulary == (UNKNOWN_TOKEN, "Al", "Pr", "Tc")
    assert enc.spec.cont_names == ("age", "bmi", "duration")


def test_fit_uses_training_rows_only(train):
    test = _table([("Litt3200", "Ll", 10.0, 50.0, NAN, NAN, 0.0, 9.0)])
    a = MetadataEncoder().fit(train).state_dict()
    b = MetadataEncoder().fit(train)
    b.transform(pd.concat([train, test]))  # transforming test rows never changes the fit
    assert b.state_dict() == a
    assert "Litt3200" not in a["vocabularies"]["device"]


def test_imputation_and_zscore_by_hand(train):
    enc = MetadataEncoder().fit(train)
    age_median = np.median([70.0, 60.0, 4.0])
    bmi_median = np.median([30.0, 20.0])  # adult BMI column (half present -> adult median, reference rule)
    assert enc.impute == {"age": age_median, "bmi": bmi_median}
    age = np.array([70.0, 60.0, 4.0, age_median])
    bmi = np.array([30.0, 20.0, 16.0, bmi_median])
    dur = np.array([2.0, 3.0, 1.0, 1.0])
    expected = np.stack([(v - v.mean()) / (v.std() + 1e-6) for v in (age, bmi, dur)], axis=1)
    out = enc.transform(train)
    np.testing.assert_allclose(out["cont"], expected.astype(np.float32), rtol=1e-5, atol=1e-6)
    assert out["cont"].dtype == np.float32 and out["device"].dtype == np.int64
    np.testing.assert_array_equal(out["device"], [2, 1, 1, 2])
    np.testing.assert_array_equal(out["site"], [1, 3, 2, 1])  # Al, Tc, Pr, Al


def test_child_bmi_rule_bounds():
    bmi = child_bmi(
        np.array([16.0, 2.0, 16.0, NAN, 16.0]), np.array([100.0, 100.0, 0.0, 100.0, 50.0]), (10, 60)
    )
    np.testing.assert_allclose(bmi[0], 16.0)
    assert np.isnan(bmi[1])  # 2 kg/m^2: implausible
    assert np.isnan(bmi[2]) and np.isnan(bmi[3])  # zero height / missing weight
    assert np.isnan(bmi[4])  # 64 kg/m^2 > 60: implausible


def test_missing_flags_appended_unscaled(train):
    enc = MetadataEncoder(use_missing_flags=True).fit(train)
    assert enc.spec.cont_names == ("age", "bmi", "duration", "age_missing", "bmi_missing")
    out = enc.transform(train)["cont"]
    np.testing.assert_array_equal(out[:, 3], [0, 0, 0, 1])
    np.testing.assert_array_equal(out[:, 4], [0, 0, 0, 1])  # the child's BMI was computable


def test_unknown_device_maps_to_zero_with_warning(train, caplog):
    enc = MetadataEncoder().fit(train)
    with caplog.at_level(logging.WARNING):
        one = enc.encode_one(device="Stethoscope9000", site="Al", duration=2.5, age=None, bmi=None)
    assert one["device"].tolist() == [UNKNOWN_ID] and one["site"].tolist() == [1]
    assert "Stethoscope9000" in caplog.text
    assert one["cont"].shape == (1, 3)
    # missing age/BMI are imputed with the training medians
    expected_age = (enc.impute["age"] - enc.mean["age"]) / enc.std["age"]
    assert one["cont"][0, 0].item() == pytest.approx(expected_age, rel=1e-5)


def test_encode_one_takes_all_cycles_of_a_recording_with_one_warning(train, caplog):
    enc = MetadataEncoder().fit(train)
    with caplog.at_level(logging.WARNING, logger="ls.data.metadata"):
        many = enc.encode_one(device="Stethoscope9000", site="Al", duration=[1.0, 2.0, 3.5], age=40.0)
    assert caplog.text.count("Stethoscope9000") == 1
    assert many["device"].tolist() == [UNKNOWN_ID] * 3 and many["cont"].shape == (3, 3)
    expected_dur = (np.array([1.0, 2.0, 3.5]) - enc.mean["duration"]) / enc.std["duration"]
    np.testing.assert_allclose(many["cont"][:, 2].numpy(), expected_dur, rtol=1e-5)
    single = enc.encode_one(device="Stethoscope9000", site="Al", duration=2.0, age=40.0)
    np.testing.assert_array_equal(single["cont"][0].numpy(), many["cont"][1].numpy())
    with pytest.raises(ValueError, match="duration"):
        enc.encode_one(device="x", site="Al", duration=[])


def test_state_dict_round_trip_is_plain_json(train):
    enc = MetadataEncoder(cont_features=["duration", "age"], use_missing_flags=True).fit(train)
    state = json.loads(json.dumps(enc.state_dict()))
    back = MetadataEncoder.from_state_dict(state)
    assert back.spec == enc.spec
    for k in ("device", "site", "cont"):
        np.testing.assert_array_equal(back.transform(train)[k], enc.transform(train)[k])
    assert back.spec.cont_names == ("duration", "age", "age_missing")


def test_bad_inputs_are_named(train):
    with pytest.raises(ValueError, match="cont_features"):
        MetadataEncoder(cont_features=["height"])
    with pytest.raises(ValueError, match="child_bmi_range"):
        MetadataEncoder(child_bmi_range=[60, 10])
    with pytest.raises(RuntimeError, match="not fitted"):
        MetadataEncoder().transform(train)
    with pytest.raises(KeyError, match="Age"):
        MetadataEncoder().fit(train.drop(columns="Age"))
    with pytest.raises(ValueError, match="lacks key"):
        MetadataEncoder.from_state_dict({"cont_features": ["age"]})


def test_icbhi_spec_is_what_an_encoder_fitted_on_the_whole_database_produces(icbhi_meta_dir):
    from ls.data.icbhi import full_metadata_spec

    table = pd.read_csv(icbhi_meta_dir / "icbhi_metadata.csv")
    assert MetadataEncoder().fit(table).spec == full_metadata_spec()


def test_an_ls_0_1_encoder_state_still_loads(train):
    """Checkpoints of format 1 carry a version-1 state (device/site vocabularies by name; the feature
    statistics of mel_norm: dataset were in the config and are passed in)."""
    enc = MetadataEncoder().fit(train)
    v2 = enc.state_dict()
    v1 = {"version": 1, "device_names": v2["vocabularies"]["device"], "site_names": v2["vocabularies"]["site"],
          **{k: v2[k] for k in ("cont_features", "use_missing_flags", "child_bmi_range", "impute", "mean", "std")}}
    back = MetadataEncoder.from_state_dict(v1, feature_stats={"mean": -1.5, "std": 2.0})
    assert back.spec == enc.spec and back.feature_stats == {"mean": -1.5, "std": 2.0}
    for k in ("device", "site", "cont"):
        np.testing.assert_array_equal(back.transform(train)[k], enc.transform(train)[k])


def test_a_schema_declares_any_factors_and_continuous_columns():
    """A dataset other than ICBHI: its own factors and continuous columns, no BMI rule."""
    from ls.data.schema import MetadataSchema

    schema = MetadataSchema({"site": "Site", "sex": "Sex"}, {"age": "Age", "duration": None})
    table = pd.DataFrame({"Site": ["p1", "p2", "p1", "p3"], "Sex": ["F", "M", "M", None], "Age": [3.0, None, 5.0, 7.0],
                          "CycleStart": [0.0, 1.0, 2.0, 0.5], "CycleEnd": [1.0, 2.5, 2.5, 1.0]})
    enc = MetadataEncoder(schema).fit(table.iloc[:3])
    assert enc.spec.factor_names == ("site", "sex") and enc.spec.cont_names == ("age", "duration")
    assert enc.vocabulary("sex") == ("<unknown>", "F", "M") and enc.impute == {"age": 4.0}
    out = enc.transform(table)
    assert out["site"].tolist() == [1, 2, 1, 0] and out["sex"].tolist() == [1, 2, 2, 0]  # p3, None: unknown
    one = enc.encode_one(duration=[1.0, 2.0], site="p2", sex="F")
    assert one["site"].tolist() == [2, 2] and one["cont"].shape == (2, 2)
    with pytest.raises(ValueError, match=r"unknown metadata \['device'\]; this encoder takes age, sex, site"):
        enc.encode_one(duration=1.0, device="Meditron")
