"""save_pretrained / from_pretrained: exact round trip, locally and through object storage (moto S3)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from step_dist.model import STEPEncoder, StudentConfig


def _trained_looking(**overrides):
    torch.manual_seed(0)
    enc = STEPEncoder(StudentConfig.named("tiny", **overrides))
    with torch.no_grad():  # move every weight off its init so a skipped tensor would show
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return enc


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.config == b.config
    x = np.random.default_rng(0).standard_normal((2, 700)).astype(np.float32)
    np.testing.assert_array_equal(a.encode(x, 100.0), b.encode(x, 100.0))


def test_when_saved_to_a_folder_then_loading_gives_the_identical_model(tmp_path):
    enc = _trained_looking(patching="fixed", n_max=120)
    enc.save_pretrained(str(tmp_path / "export"))
    assert sorted(os.listdir(tmp_path / "export")) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "export" / "config.json").read_text())
    assert meta["config"]["patching"] == "fixed" and meta["config"]["n_max"] == 120
    _assert_same(enc, STEPEncoder.from_pretrained(str(tmp_path / "export")))


def test_when_saved_to_s3_then_loading_from_the_uri_gives_the_identical_model(s3_bucket):
    enc = _trained_looking()
    uri = f"{s3_bucket}/exports/student-v1"
    enc.save_pretrained(uri)
    _assert_same(enc, STEPEncoder.from_pretrained(uri))


def test_when_loading_then_neither_ray_nor_deepspeed_is_imported(tmp_path):
    _trained_looking().save_pretrained(str(tmp_path / "e"))
    code = (
        "import sys; from step_dist.model import STEPEncoder; import numpy as np;"
        f"m = STEPEncoder.from_pretrained({str(tmp_path / 'e')!r});"
        "m.encode(np.ones((1, 64), np.float32));"
        "bad = [n for n in ('ray', 'deepspeed') if n in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_when_the_folder_is_not_an_export_then_the_error_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        STEPEncoder.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"format": "step-dist-student", "config": {"d_modle": 8}}))
    with pytest.raises(ValueError, match="d_modle"):
        STEPEncoder.from_pretrained(str(tmp_path))
