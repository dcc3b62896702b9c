"""The teacher stage's batch contract without Ray: columns added, numpy and Arrow batches, views."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from step_dist.data.views import ViewConfig
from step_dist.signals.record import SignalRecord, rows_to_table
from step_dist.teachers import TeacherConfig, TeacherTargetsUDF, expand_views


def _table():
    rng = np.random.default_rng(0)
    recs = [SignalRecord(id=f"r{i}", source="s", domain="d", sampling_rate_hz=100.0,
                         values=rng.normal(size=(2, 500 + 300 * i)).astype(np.float32)) for i in range(3)]
    return rows_to_table([r.to_row() for r in recs])


def test_when_views_are_expanded_twice_then_they_are_identical_and_crop_to_max_length():
    cfg = ViewConfig(max_length=600, min_length=16, views_per_record=2, seed=5)
    a, b = expand_views(_table(), cfg), expand_views(_table(), cfg)
    assert a.equals(b)
    assert a.num_rows == 6 and max(a["length"].to_pylist()) == 600
    assert a.schema.field("values").type == pa.large_binary()


def test_when_a_numpy_or_arrow_batch_goes_through_the_udf_then_both_get_the_same_target_columns():
    views = expand_views(_table(), ViewConfig(max_length=700, min_length=16))
    udf = TeacherTargetsUDF([TeacherConfig(name="fc", kind="fracast")])
    arrow = udf(views)
    numpy_batch = udf({c: views[c].to_numpy(zero_copy_only=False) for c in views.column_names})
    assert arrow.schema.field("t_fc").type == pa.large_binary()
    assert arrow["t_fc_tokens"].to_pylist() == [-(-n // 16) for n in views["length"].to_pylist()]
    assert list(numpy_batch["t_fc_tokens"]) == arrow["t_fc_tokens"].to_pylist()
    for x, y in zip(numpy_batch["t_fc"], arrow["t_fc"].to_pylist()):
        assert bytes(x) == y
