"""EEG teachers through braindecode: tiny random CBraMod, LaBraM, BIOT and EEGPT saved with save_pretrained (as the
braindecode/*-pretrained repositories are published), loaded through the adapter from a folder and from S3, and
checked against braindecode's own from_pretrained + forward."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, TeacherInputError, build_teacher

if importlib.util.find_spec("braindecode") is None:  # installed but broken is a failure below, not a skip
    pytest.skip("braindecode is not installed: make install-eeg (or pip install 'step-dist[eeg]')", allow_module_level=True)

import torch  # noqa: E402
from braindecode.models import BIOT, EEGPT, CBraMod, Labram  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # braindecode's notes on toy sizes and rates

CHANNELS = ["Fp1", "Fp2", "C3", "C4"]
BIPOLAR = ["FP1-F7", "F7-T7", "T7-P7", "P7-O1"]  # the first four of BIOT_CHANNEL_ORDER
# what the adapter should find in each tiny model: native rate, samples per view, tokens per full view, dim
SHAPES = {"CBraMod": (200.0, 800, 4, 32), "Labram": (200.0, 800, 4, 100), "BIOT": (200.0, 800, 7, 16),
          "EEGPT": (256.0, 512, 15, 32)}


def save_tiny(variant: str, folder, seed: int = 0) -> str:
    """A random model at toy sizes with the published models' structure, saved the way braindecode publishes."""
    torch.manual_seed(seed)
    if variant == "CBraMod":  # 200 Hz, 1 s patches (its spectral branch is fixed to 200-sample patches)
        m = CBraMod(n_outputs=2, n_chans=4, n_times=800, sfreq=200, n_layer=2, nhead=2, dim_feedforward=32,
                    channels_kernel_stride_padding_norm=((4, 49, 25, 24, (2, 4)), (4, 3, 1, 1, (2, 4)), (4, 3, 1, 1, (2, 4))))
    elif variant == "Labram":  # 200 Hz, 1 s patches, temporal-conv tokenizer
        m = Labram(n_outputs=2, n_chans=4, n_times=800, sfreq=200, conv_out_channels=4, num_layers=2, num_heads=2,
                   mlp_ratio=2.0)
    elif variant == "BIOT":  # 200 Hz, STFT of 1 s windows every 0.5 s
        m = BIOT(n_outputs=2, n_chans=4, n_times=800, sfreq=200, embed_dim=16, num_heads=2, num_layers=2,
                 chs_info=[{"ch_name": n} for n in BIPOLAR])
    else:  # EEGPT: 256 Hz, 64-sample patches every 32 samples, channel embeddings by electrode name
        m = EEGPT(n_outputs=2, n_chans=4, n_times=512, sfreq=256, chs_info=[{"ch_name": n} for n in CHANNELS],
                  patch_size=64, patch_stride=32, embed_num=2, embed_dim=16, depth=2, num_heads=2, chan_proj_type="none")
    m.eval().save_pretrained(str(folder))
    return str(folder)


def config(variant: str, checkpoint: str, **kw) -> TeacherConfig:
    montage = {"Labram": CHANNELS, "EEGPT": CHANNELS, "BIOT": BIPOLAR}.get(variant)
    if montage and kw.setdefault("channel_mode", "montage") == "montage":
        kw.setdefault("montage", montage)
    return TeacherConfig(name=variant.lower(), kind="braindecode", variant=variant, checkpoint=checkpoint, **kw)


def eeg(seconds: float, rate: float, channels: int = 4) -> np.ndarray:
    """EEG-like: alpha and beta rhythms with a channel-specific phase, plus noise, in volts."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    x = [np.sin(2 * np.pi * 10 * t + c) + 0.5 * np.sin(2 * np.pi * 21 * t + 2 * c) + 0.3 * rng.standard_normal(t.size)
         for c in range(channels)]
    return (np.stack(x) * 20e-6).astype(np.float32)


def names_for(variant: str) -> list[str]:
    return BIPOLAR if variant == "BIOT" else CHANNELS


@pytest.mark.parametrize("variant", ["CBraMod", "Labram", "BIOT", "EEGPT"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_tiny_eeg_model_is_loaded_then_targets_are_its_time_tokens_and_deterministic(variant, where, tmp_path, request):
    folder = save_tiny(variant, tmp_path / variant)
    ck = folder
    if where == "s3":  # moto's S3 server on 127.0.0.1, started only for these cases
        ck = f"{request.getfixturevalue('s3_bucket')}/{variant}"
        storage.upload_dir(folder, ck)
    t = build_teacher(config(variant, ck, cache_dir=str(tmp_path / "dl")))
    rate, window, tokens, dim = SHAPES[variant]
    assert (t.family, t.native_rate_hz, t.context_length, t.dim) == ("eeg", rate, window, dim)
    x = eeg(5.0, 250.0)  # 5 s at 250 Hz: resampled to the model's rate, then cut to its window
    p = t.prepare(x, 250.0, "rec", channel_names=names_for(variant))
    assert p.shape == (4, window)
    np.testing.assert_allclose(p.mean(axis=1), 0, atol=1e-4)  # each channel z-scored: volts or microvolts alike
    np.testing.assert_allclose(p.std(axis=1), 1, atol=1e-3)
    short = t.prepare(x[:, :100], 250.0, "short", channel_names=names_for(variant), allow_short=True)
    a, b = t.embed([p, short]), t.embed([p, short])
    assert a[0].shape == (tokens, dim) == (t.num_tokens(window), t.dim)
    assert a[1].shape == (0, dim) == (t.expected_tokens(short.shape[1]), dim)  # too short: no target, no error
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isfinite(a[0]).all() and a[0].std() > 0
    assert not np.allclose(a[0][0], a[0][-1])  # one token per time step, not one vector repeated
    if where == "s3":  # the downloaded copy is the same checkpoint
        local = build_teacher(config(variant, folder))
        assert local.fingerprint == t.fingerprint
        np.testing.assert_array_equal(local.embed([p])[0], a[0])


def _reference(variant: str, folder: str, p: np.ndarray, device) -> np.ndarray:
    """Per-time tokens from braindecode's own from_pretrained + public forward, channel-averaged as documented."""
    cls = {"CBraMod": CBraMod, "Labram": Labram, "BIOT": BIOT, "EEGPT": EEGPT}[variant]
    m = cls.from_pretrained(folder, strict=True, local_files_only=True).to(device).eval()
    x = torch.from_numpy(p[None]).to(device)
    with torch.inference_mode():
        if variant == "EEGPT":
            return m(x, return_features=True)["features"][0].cpu().numpy()  # [P, embed_num * D]
        if variant == "Labram":
            f = m(x, return_features=True, ch_names=CHANNELS)["features"][0]  # [C * P, D]
            return f.reshape(4, -1, f.shape[-1]).mean(0).cpu().numpy()
        if variant == "CBraMod":  # return_features applies proj_out (the reconstruction head) to every token
            return m(x, return_features=True)["features"][0].mean(0).cpu().numpy()
        return m(x, return_features=True)["features"][0].cpu().numpy()  # BIOT: the mean of every token, [D]


@pytest.mark.parametrize("variant", ["CBraMod", "Labram", "BIOT", "EEGPT"])
def test_when_targets_are_compared_with_braindecodes_own_forward_then_they_match(variant, tmp_path):
    folder = save_tiny(variant, tmp_path / variant)
    t = build_teacher(config(variant, folder))
    p = t.prepare(eeg(4.0, t.native_rate_hz), t.native_rate_hz, "rec", channel_names=names_for(variant))
    got = t.embed([p])[0]
    ref = _reference(variant, folder, p, t.device)
    if variant == "CBraMod":  # proj_out is linear: projecting the channel-mean tokens = the channel mean of projections
        with torch.inference_mode():
            got = t.model.proj_out(torch.from_numpy(got).to(t.device)).cpu().numpy()
    if variant == "BIOT":  # its encoder averages every (channel, frame) token; the targets keep the frames apart
        got = got.mean(axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant,layers", [("CBraMod", (0, 1, 2)), ("Labram", (0, 1, 2)), ("EEGPT", (1, 2))])
def test_when_another_layer_is_chosen_then_targets_and_fingerprint_change(variant, layers, tmp_path):
    folder = save_tiny(variant, tmp_path / variant)
    last = build_teacher(config(variant, folder))
    p = last.prepare(eeg(4.0, last.native_rate_hz), last.native_rate_hz, "rec", channel_names=CHANNELS)
    ref = last.embed([p])[0]
    fingerprints = {last.fingerprint}
    for layer in layers:
        t = build_teacher(config(variant, folder, layer=layer))
        fingerprints.add(t.fingerprint)
        out = t.embed([p])[0]
        assert out.shape == ref.shape
        assert np.allclose(out, ref) == (layer == 2)  # the last of 2 blocks is -1, the model's own output
    assert len(fingerprints) == len(layers) + 1
    with pytest.raises(TeacherError, match=rf"teacher {variant.lower()}: layer 9 out of range; this {variant} has 2 blocks"):
        build_teacher(config(variant, folder, layer=9))


def test_when_the_checkpoint_changes_then_the_fingerprint_and_targets_change(tmp_path):
    ta = build_teacher(config("CBraMod", save_tiny("CBraMod", tmp_path / "a", seed=0)))
    tb = build_teacher(config("CBraMod", save_tiny("CBraMod", tmp_path / "b", seed=1)))
    assert ta.fingerprint != tb.fingerprint
    p = ta.prepare(eeg(4.0, 200.0), 200.0, "rec")
    assert not np.allclose(ta.embed([p])[0], tb.embed([p])[0])


def test_when_a_record_names_its_channels_then_the_montage_picks_them_by_name_for_labram(tmp_path):
    folder = save_tiny("Labram", tmp_path / "labram")
    t = build_teacher(config("Labram", folder))
    x = eeg(4.0, 200.0, channels=5)
    record_names = ["c4", "EXTRA", "FP1", "c3", "Fp2"]  # another order, other cases, one channel LaBraM never saw
    p = t.prepare(x, 200.0, "rec", channel_names=record_names)
    ordered = t.prepare(x[[2, 4, 3, 0]], 200.0, "rec", channel_names=CHANNELS)
    np.testing.assert_array_equal(p, ordered)
    # LaBraM's position embedding follows the names: the same signals under other names are other targets
    other = build_teacher(config("Labram", folder, montage=["O1", "O2", "Pz", "Cz"]))
    assert not np.allclose(t.embed([p])[0], other.embed([p])[0])
    fewer = build_teacher(config("Labram", folder, montage=["C3", "C4"]))  # any subset of its channels
    assert fewer.embed([fewer.prepare(x, 200.0, "rec", channel_names=record_names)])[0].shape == (4, 100)
    with pytest.raises(TeacherError, match=r"teacher labram: Labram identifies EEG channels by name; set channel_mode: montage"):
        build_teacher(config("Labram", folder, channel_mode="per_channel"))
    with pytest.raises(TeacherError, match=r"teacher labram: montage channels \['EXTRA'\] are not in LABRAM_CHANNEL_ORDER"):
        build_teacher(config("Labram", folder, montage=["FP1", "EXTRA"]))


def test_when_biot_gets_a_montage_then_each_channel_keeps_its_own_channel_token(tmp_path):
    folder = save_tiny("BIOT", tmp_path / "biot")
    x = eeg(4.0, 200.0, channels=2)
    positional = build_teacher(config("BIOT", folder, channel_mode="per_channel"))
    p = positional.prepare(x, 200.0, "rec")
    by_name = build_teacher(config("BIOT", folder, montage=["FP1-F7", "F7-T7"]))
    swapped = build_teacher(config("BIOT", folder, montage=["F7-T7", "FP1-F7"]))
    q = by_name.prepare(x, 200.0, "rec", channel_names=["FP1-F7", "F7-T7"])
    np.testing.assert_allclose(by_name.embed([q])[0], positional.embed([p])[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(swapped.embed([q])[0], positional.embed([p])[0])
    with pytest.raises(TeacherError, match=r"teacher biot: montage channels \['C3-P3'\] are not in the checkpoint's channels"):
        build_teacher(config("BIOT", folder, montage=["FP1-F7", "C3-P3"]))  # in BIOT's order, not in this checkpoint
    too_many = eeg(4.0, 200.0, channels=6)
    with pytest.raises(TeacherInputError, match=r"teacher biot: the BIOT checkpoint takes at most 4 channels, the prepared view has 6"):
        positional.embed([positional.prepare(too_many, 200.0, "rec")])


def test_when_eegpt_gets_other_channels_then_the_error_says_how_many_it_takes(tmp_path):
    folder = save_tiny("EEGPT", tmp_path / "eegpt")
    positional = build_teacher(config("EEGPT", folder, channel_mode="per_channel"))  # the checkpoint's own channel ids
    named = build_teacher(config("EEGPT", folder))  # the same names through the montage
    x = eeg(2.0, 256.0)
    p = named.prepare(x, 256.0, "rec", channel_names=CHANNELS)
    np.testing.assert_array_equal(named.embed([p])[0], positional.embed([p])[0])
    with pytest.raises(TeacherInputError, match=r"teacher eegpt: the EEGPT checkpoint takes exactly 4 channels, the prepared view has 3"):
        positional.embed([positional.prepare(x[:3], 256.0, "rec")])
    with pytest.raises(TeacherError, match=r"teacher eegpt: the EEGPT checkpoint takes exactly 4 channels, the montage names 2"):
        build_teacher(config("EEGPT", folder, montage=["C3", "C4"]))
    with pytest.raises(TeacherError, match=r"montage channels \['T3'\] are not in EEGPT_CHANNELS"):
        build_teacher(config("EEGPT", folder, montage=["FP1", "FP2", "C3", "T3"]))


def test_when_cbramod_gets_any_number_of_channels_then_it_takes_them_all(tmp_path):
    t = build_teacher(config("CBraMod", save_tiny("CBraMod", tmp_path / "c")))
    for c in (1, 3, 7):
        p = t.prepare(eeg(3.3, 200.0, channels=c), 200.0, "rec")
        assert p.shape == (c, 660)
        assert t.embed([p])[0].shape == (3, 32)  # whole 1 s patches; the 0.3 s tail gives no token


@pytest.mark.parametrize("variant", ["CBraMod", "EEGPT"])
def test_when_a_checkpoint_has_no_classification_head_then_it_gives_the_same_targets(variant, tmp_path):
    headed = build_teacher(config(variant, save_tiny(variant, tmp_path / "headed")))
    torch.manual_seed(0)  # the same encoder weights: both build the head after the encoder
    if variant == "CBraMod":  # what a pretraining export looks like: no n_outputs, no window, encoder output
        m = CBraMod(n_chans=4, sfreq=200, n_layer=2, nhead=2, dim_feedforward=32, return_encoder_output=True,
                    channels_kernel_stride_padding_norm=((4, 49, 25, 24, (2, 4)), (4, 3, 1, 1, (2, 4)), (4, 3, 1, 1, (2, 4))))
    else:
        m = EEGPT(n_chans=4, n_times=512, sfreq=256, chs_info=[{"ch_name": n} for n in CHANNELS], patch_size=64,
                  patch_stride=32, embed_num=2, embed_dim=16, depth=2, num_heads=2, chan_proj_type="none",
                  return_encoder_output=True)
    m.eval().save_pretrained(str(tmp_path / "bare"))
    assert json.load(open(tmp_path / "bare" / "config.json"))["n_outputs"] is None
    bare = build_teacher(config(variant, str(tmp_path / "bare")))
    p = headed.prepare(eeg(2.0, headed.native_rate_hz), headed.native_rate_hz, "rec", channel_names=CHANNELS)
    np.testing.assert_array_equal(bare.embed([p])[0], headed.embed([p])[0])
    assert bare.fingerprint != headed.fingerprint


def test_when_only_the_pickle_weights_are_there_then_they_load_without_running_code(tmp_path):
    folder = save_tiny("EEGPT", tmp_path / "e")
    both = build_teacher(config("EEGPT", folder))
    p = both.prepare(eeg(2.0, 256.0), 256.0, "rec", channel_names=CHANNELS)
    os.remove(os.path.join(folder, "model.safetensors"))
    pickled = build_teacher(config("EEGPT", folder))  # torch.load(weights_only=True)
    np.testing.assert_array_equal(pickled.embed([p])[0], both.embed([p])[0])


def test_when_the_s3_checkpoint_is_missing_then_the_error_names_teacher_and_uri(tmp_path, s3_bucket):
    with pytest.raises(TeacherError, match=rf"teacher cbramod: checkpoint {s3_bucket}/nothing-here does not exist"):
        build_teacher(config("CBraMod", f"{s3_bucket}/nothing-here", cache_dir=str(tmp_path / "dl")))


def test_when_the_checkpoint_or_its_weights_are_missing_then_the_error_names_teacher_and_path(tmp_path):
    gone = str(tmp_path / "nowhere")
    with pytest.raises(TeacherError, match=rf"teacher cbramod: checkpoint {gone} does not exist"):
        build_teacher(config("CBraMod", gone))
    folder = save_tiny("CBraMod", tmp_path / "c")
    for f in ("model.safetensors", "pytorch_model.bin"):
        os.remove(os.path.join(folder, f))
    with pytest.raises(TeacherError, match=r"teacher cbramod: checkpoint .*c \(.*\) holds none of \['model.safetensors', 'pytorch_model.bin'\]"):
        build_teacher(config("CBraMod", folder))


@pytest.mark.parametrize("variant", ["CBraMod", "Labram", "BIOT", "EEGPT"])
def test_when_the_weights_are_truncated_then_the_error_names_teacher_and_file(variant, tmp_path):
    folder = save_tiny(variant, tmp_path / variant)
    w = os.path.join(folder, "model.safetensors")
    data = open(w, "rb").read()
    open(w, "wb").write(data[: len(data) // 2])  # an interrupted upload
    assert build_teacher(config(variant, folder), load=False).fingerprint  # the cache lookup needs no model
    with pytest.raises(TeacherError, match=rf"teacher {variant.lower()}: cannot read weights .*{variant}/model.safetensors.*truncated"):
        build_teacher(config(variant, folder))


def test_when_the_folder_holds_another_architecture_then_the_error_says_which(tmp_path):
    labram = save_tiny("Labram", tmp_path / "labram")
    with pytest.raises(TeacherError, match=r"teacher cbramod: .*labram.* is not a braindecode CBraMod checkpoint: its config.json "
                                           r"does not build one \(TypeError: .*\); is variant the class it was saved from\?"):
        build_teacher(config("CBraMod", labram))
    folder = save_tiny("CBraMod", tmp_path / "c")
    cfg_path = os.path.join(folder, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["n_layer"] = 3  # the weights hold 2 layers
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(TeacherError, match=r"teacher cbramod: weights in .*model.safetensors do not fit the braindecode architecture "
                                           r"\(variant CBraMod\): .*encoder.layers.2"):
        build_teacher(config("CBraMod", folder))
    with pytest.raises(TeacherError, match=r"teacher eeg: kind braindecode needs variant set to the model class, one of "
                                           r"\['BIOT', 'CBraMod', 'EEGPT', 'Labram'\]; got ''"):
        build_teacher(TeacherConfig(name="eeg", kind="braindecode", checkpoint=folder))


def test_when_a_config_names_a_class_outside_torch_then_nothing_is_imported(tmp_path):
    folder = save_tiny("CBraMod", tmp_path / "c")
    cfg_path = os.path.join(folder, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["activation"] = "os.system"
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(TeacherError, match=r"teacher cbramod: .*config.json names 'os.system' for activation; only torch.nn"):
        build_teacher(config("CBraMod", folder))


def test_when_the_install_step_has_run_then_torchaudio_imports_with_this_torch():
    # `make install` runs the compat step; where torchaudio's compiled ops match torch it has nothing to do
    r = subprocess.run([sys.executable, "-m", "step_dist.teachers.adapters._torchaudio_compat", "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr
