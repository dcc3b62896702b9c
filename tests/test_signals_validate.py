"""validate_record is a pure function of a record (or a shard row) and a config; repairs are explicit."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist.signals.record import SignalRecord
from step_dist.signals.validate import ValidationConfig, apply_nan_policy, check, validate_record


def _rec(values, **kw) -> SignalRecord:
    return SignalRecord(id="r", source="s", domain="d", sampling_rate_hz=1.0, values=np.asarray(values, np.float32), **kw)


def test_when_a_record_is_fine_then_validation_returns_none_for_the_record_and_its_row():
    r = _rec(np.arange(20, dtype=np.float32).reshape(2, 10))
    assert validate_record(r, ValidationConfig()) is None
    assert validate_record(r.to_row(), ValidationConfig()) is None


@pytest.mark.parametrize(
    "values,cfg,reason",
    [
        (np.zeros((1, 0)), ValidationConfig(), "zero-length"),
        ([[1.0, np.nan, 2.0]], ValidationConfig(), "non-finite"),
        ([[1.0, np.inf, 2.0]], ValidationConfig(nan_policy="zero-fill"), "non-finite"),  # validate never repairs
        ([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], ValidationConfig(), "constant"),
        (np.ones((1, 50)) * np.arange(50), ValidationConfig(max_length=10), "too long"),
        (np.ones((1, 5)) * np.arange(5), ValidationConfig(min_length=10), "too short"),
        (np.ones((4, 5)) * np.arange(5), ValidationConfig(max_channels=3), "too many channels"),
        (np.ones((2, 50)) * np.arange(50), ValidationConfig(max_bytes=100), "too large"),
    ],
)
def test_when_a_record_breaks_a_rule_then_the_reason_names_it(values, cfg, reason):
    r = _rec(values)
    assert reason in validate_record(r, cfg)
    assert reason in validate_record(r.to_row(), cfg)


def test_when_a_constant_record_is_allowed_then_it_passes():
    assert validate_record(_rec([[3.0, 3.0, 3.0]]), ValidationConfig(allow_constant=True)) is None


def test_when_a_row_has_fewer_value_bytes_than_its_shape_then_it_is_mismatched():
    row = _rec(np.ones((2, 10)) * np.arange(10)).to_row()
    row["values"] = row["values"][:-4]
    assert "mismatched channel lengths" in validate_record(row, ValidationConfig())
    row = _rec(np.ones((2, 10)) * np.arange(10)).to_row()
    row["channel_names"] = ["only-one"]
    assert "mismatched channels" in validate_record(row, ValidationConfig())


def test_when_nan_policy_is_zero_fill_then_check_repairs_and_records_it_and_quarantine_keeps_values():
    v = np.array([[1.0, np.nan, 3.0, 4.0]], np.float32)
    fixed, entry = check(_rec(v), ValidationConfig(nan_policy="zero-fill"))
    assert entry is None and fixed.values.tolist() == [[1.0, 0.0, 3.0, 4.0]]
    assert fixed.meta["nan_policy"] == {"policy": "zero-fill", "samples_repaired": 1}
    assert apply_nan_policy(_rec(v), ValidationConfig()).meta == {}
    _, entry = check(_rec(v), ValidationConfig())
    assert entry.id == "r" and "non-finite" in entry.reason


def test_when_a_channel_is_all_nan_then_interpolation_cannot_save_it():
    _, entry = check(_rec([[np.nan, np.nan], [1.0, 2.0]]), ValidationConfig(nan_policy="interpolate"))
    assert entry is not None and "non-finite" in entry.reason


def test_when_the_nan_policy_is_unknown_then_config_refuses_it():
    with pytest.raises(ValueError, match="nan_policy"):
        ValidationConfig(nan_policy="drop")
