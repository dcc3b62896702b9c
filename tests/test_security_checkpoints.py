"""Checkpoints from a bucket must not run code on load: real malicious pickles, real torch.save files."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from step_dist.train.safety import UnsafeCheckpointError, check_checkpoint_files


class _TouchOnLoad:
    """Unpickling this calls os.system("touch MARKER"): the classic payload."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _memo_trick_payload(marker: str) -> bytes:
    """A hand-assembled protocol-4 stream that memoizes "os"/"system", pushes harmless names, drops them and
    fetches the real ones back before STACK_GLOBAL (defeats scanners that only look at the last strings)."""
    def s(x: str) -> bytes:
        b = x.encode()
        return b"\x8c" + bytes([len(b)]) + b  # SHORT_BINUNICODE

    return (b"\x80\x04" + s("os") + b"\x94" + s("system") + b"\x94"  # push + MEMOIZE (memo 0, 1)
            + s("collections") + s("OrderedDict") + b"0" + b"0"  # push harmless names, POP POP
            + b"h\x00" + b"h\x01" + b"\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL -> os.system
            + s(f"touch {marker}") + b"\x85" + b"R" + b".")  # TUPLE1, REDUCE, STOP


def _deepspeed_like_folder(root, payload: object | bytes | None) -> str:
    """A checkpoint folder laid out as the loop writes it; the optimizer-state file carries ``payload``."""
    folder = root / "checkpoint_step_00000003"
    ds = folder / "deepspeed" / "step_00000003"
    ds.mkdir(parents=True)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    torch.save({"module": model.state_dict(), "dtype": torch.float32, "shape": torch.Size([3, 4])},
               ds / "mp_rank_00_model_states.pt")
    target = ds / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    if isinstance(payload, bytes):
        target.write_bytes(payload)
    elif payload is not None:
        torch.save({"optimizer_state_dict": opt.state_dict(), "extra": payload}, target)
    else:
        torch.save({"optimizer_state_dict": opt.state_dict()}, target)
    (folder / "trainer_state.json").write_text('{"step": 3}')
    return str(folder)


def _unpickling_runs_the_payload(path: str, marker: str) -> bool:
    """Proof the payload is live: an unguarded load (plain pickle / torch.load(weights_only=False)) in a child
    process really creates the marker file."""
    code = ("import sys, torch; torch.load(sys.argv[1], weights_only=False)" if path.endswith(".pt")
            else "import sys, pickle; pickle.load(open(sys.argv[1], 'rb'))")
    subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=120)
    made = os.path.exists(marker)
    if made:
        os.remove(marker)
    return made


def test_when_a_checkpoint_carries_a_code_running_pickle_then_it_is_refused_and_nothing_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    folder = _deepspeed_like_folder(tmp_path, _TouchOnLoad(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"optim_states\.pt.*(posix|os)\.system.*refusing to load"):
        check_checkpoint_files(folder)
    assert not os.path.exists(marker), "the scan itself must never execute the payload"
    assert _unpickling_runs_the_payload(
        os.path.join(folder, "deepspeed", "step_00000003", "zero_pp_rank_0_mp_rank_00_optim_states.pt"), marker)


def test_when_a_payload_hides_its_import_behind_memo_reads_then_it_is_still_refused(tmp_path):
    marker = str(tmp_path / "pwned2")
    payload = _memo_trick_payload(marker)
    pkl = tmp_path / "raw.pkl"
    pkl.write_bytes(payload)
    assert _unpickling_runs_the_payload(str(pkl), marker), "the hand-made stream must be a working payload"
    folder = _deepspeed_like_folder(tmp_path, payload)
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
        check_checkpoint_files(folder)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("dangerous", ["torch.hub.load", "numpy.testing._private.utils.runstring", "builtins.eval",
                                       "builtins.getattr", "torch.utils.cpp_extension.load"])
def test_when_a_pickle_imports_a_code_runner_from_an_allowed_package_then_it_is_refused(tmp_path, dangerous):
    mod, name = dangerous.rsplit(".", 1)
    stream = b"\x80\x02c" + f"{mod}\n{name}\n".encode() + b")R."  # GLOBAL, EMPTY_TUPLE, REDUCE
    (tmp_path / "x.pkl").write_bytes(stream)
    with pytest.raises(UnsafeCheckpointError, match=name):
        check_checkpoint_files(str(tmp_path))


def test_when_a_payload_follows_a_harmless_first_pickle_as_in_torchs_legacy_format_then_it_is_refused(tmp_path):
    # torch's non-zip format is several pickles in a row (magic number, version, sys info, the object): a scan
    # that stops at the first STOP saw only the magic number, and DeepSpeed's torch.load ran the rest
    marker = str(tmp_path / "pwned3")
    folder = _deepspeed_like_folder(tmp_path, None)
    target = os.path.join(folder, "deepspeed", "step_00000003", "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    torch.save({"extra": _TouchOnLoad(marker)}, target, _use_new_zipfile_serialization=False)
    assert _unpickling_runs_the_payload(target, marker), "the legacy-format file must be a working payload"
    with pytest.raises(UnsafeCheckpointError, match="follow the first pickle"):
        check_checkpoint_files(folder)
    assert not os.path.exists(marker)


def test_when_a_checkpoint_links_out_or_renames_its_payload_then_it_is_refused(tmp_path):
    marker = str(tmp_path / "pwned4")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(pickle.dumps(_TouchOnLoad(marker)))
    folder = _deepspeed_like_folder(tmp_path / "a", None)
    os.symlink(outside, os.path.join(folder, "deepspeed", "step_00000004"))  # os.walk does not enter it; DeepSpeed would
    with pytest.raises(UnsafeCheckpointError, match="symbolic link"):
        check_checkpoint_files(folder)
    renamed = _deepspeed_like_folder(tmp_path / "b", None)
    with open(os.path.join(renamed, "deepspeed", "latest_states"), "wb") as f:  # no pickle suffix: found by its bytes
        pickle.dump(_TouchOnLoad(marker), f, protocol=4)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        check_checkpoint_files(renamed)
    assert not os.path.exists(marker)


def test_when_a_checkpoint_holds_only_tensors_and_optimizer_state_then_it_passes(tmp_path):
    folder = _deepspeed_like_folder(tmp_path, None)
    assert check_checkpoint_files(folder) == 2


def test_when_the_user_trusts_a_named_global_then_only_that_one_is_let_through(tmp_path):
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"when": __import__("datetime").date(2026, 1, 1)}))
    with pytest.raises(UnsafeCheckpointError, match="datetime.date"):
        check_checkpoint_files(str(tmp_path))
    assert check_checkpoint_files(str(tmp_path), ("datetime.date",)) == 1


_DEEPSPEED_SAVE = """
import os, sys, torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import torch.distributed as dist
dist.init_process_group("gloo")
import deepspeed
m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
opt = torch.optim.AdamW(m.parameters())
sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
cfg = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": int(sys.argv[2])},
       "zero_allow_untested_optimizer": True, "gradient_clipping": 1.0}
e, _, _, _ = deepspeed.initialize(model=m, optimizer=opt, lr_scheduler=sch, config=cfg, dist_init_required=False)
e.backward(e(torch.randn(2, 8)).sum()); e.step()
e.save_checkpoint(sys.argv[1], tag="step_00000001")
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 3])
def test_when_deepspeed_writes_a_real_checkpoint_then_the_scan_lets_it_through(tmp_path, stage):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", _DEEPSPEED_SAVE, str(tmp_path / "ds"), str(stage), str(port)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert check_checkpoint_files(str(tmp_path / "ds")) >= (1 if stage == 0 else 2)  # stage 0: one model file
