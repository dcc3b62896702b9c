"""Refuse checkpoint files that would run code when loaded.

DeepSpeed restores its state with pickle (torch.load). A checkpoint that comes from a bucket could carry a
pickle payload that calls os.system on load, so before DeepSpeed touches a folder every pickle stream in it is
read opcode by opcode (nothing is executed) and any import outside an allow-list of the modules DeepSpeed
and torch legitimately store is refused, naming the file and the import.
"""
from __future__ import annotations

import io
import os
import pickletools
import zipfile

# Exactly what torch.save / DeepSpeed checkpoints reference (seen in ZeRO 0-3 checkpoints of this project).
# Whole packages are NOT allowed: torch.hub.load, torch.utils.cpp_extension.load or
# numpy.testing._private.utils.runstring live inside "safe" packages and would run code.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage"),
    ("torch.serialization", "_get_layout"), ("torch.nn.parameter", "Parameter"), ("torch", "Tensor"),
    ("torch", "Size"), ("torch", "device"), ("torch", "dtype"), ("torch", "layout"), ("torch", "memory_format"),
    ("torch.torch_version", "TorchVersion"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"), ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"), ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"), ("argparse", "Namespace"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
}
ALLOWED_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray", "range", "dict", "list", "tuple", "int",
                    "float", "str", "bool", "object"}


class UnsafeCheckpointError(RuntimeError):
    pass


_STRING_PUSH = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING")
_MEMO_PUT = ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT")
_MEMO_GET = ("GET", "BINGET", "LONG_BINGET")


# A zip member larger than this is not read into memory to be scanned (the object graph of a checkpoint is a
# few MB; tensors live in other members, which are never unpickled).
MAX_PICKLE_BYTES = 1 << 30


def _globals_in_pickle(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) the stream would import. STACK_GLOBAL takes its two names from the stack, so the
    strings pushed right before it are tracked, memo reads included (a payload can memoize "os"/"system",
    push harmless names, pop them and fetch the real ones back); anything less direct is reported as
    <unknown> and refused."""
    found: list[tuple[str, str]] = []
    tail: list[str] = []  # strings on top of the stack, most recent last
    memo: dict[int, str | None] = {}
    stream = io.BytesIO(data)
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in _STRING_PUSH:
            tail.append(arg if isinstance(arg, str) else str(arg))
        elif name in _MEMO_PUT:
            top = tail[-1] if tail else None
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = top
        elif name in _MEMO_GET:
            v = memo.get(int(arg))
            tail = tail + [v] if v is not None else []
        elif name == "GLOBAL":
            mod, attr = arg.split(" ", 1)
            found.append((mod, attr))
            tail = []
        elif name == "STACK_GLOBAL":
            found.append((tail[-2], tail[-1]) if len(tail) >= 2 else ("<unknown>", "<unknown>"))
            tail = []
        elif name in ("INST", "OBJ"):
            text = str(arg or "")
            mod, _, attr = text.partition(" ")
            found.append((mod or "<unknown>", attr or "<unknown>"))
            tail = []
        else:
            tail = []
    if stream.tell() != len(data):
        # genops stops at the first STOP: torch's legacy (non-zip) format, or a crafted file, puts more pickles
        # after it, which torch.load would run and this scan would never see
        raise ValueError(f"{len(data) - stream.tell()} bytes follow the first pickle (torch's legacy format, or "
                         "a second payload); only single pickles and torch's zip format are loaded")
    return found


def _is_allowed(mod: str, name: str, extra: frozenset[str] = frozenset()) -> bool:
    if f"{mod}.{name}" in extra:
        return True
    if mod in ("builtins", "__builtin__"):
        return name in ALLOWED_BUILTINS
    if (mod, name) in ALLOWED_GLOBALS:
        return True
    if mod == "torch" and "." not in name:
        # storages and dtypes (torch.FloatStorage, torch.bfloat16), looked up without calling anything
        import torch

        obj = getattr(torch, name, None)
        return name.endswith("Storage") or isinstance(obj, torch.dtype)
    return False


def _pickle_streams(path: str) -> list[tuple[str, bytes]]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":  # torch.save zip format: the object graph is data.pkl
        with zipfile.ZipFile(path) as z:
            out = []
            for info in z.infolist():
                if not info.filename.endswith(".pkl"):
                    continue
                if info.file_size > MAX_PICKLE_BYTES:
                    raise UnsafeCheckpointError(f"{path}:{info.filename} declares {info.file_size} bytes of pickle; "
                                                "refusing to load it")
                out.append((f"{path}:{info.filename}", z.read(info)))
            return out
    with open(path, "rb") as f:
        return [(path, f.read())]


def check_pickle_file(path: str, extra_allowed: tuple[str, ...] = ()) -> None:
    extra = frozenset(extra_allowed)
    for where, data in _pickle_streams(path):
        try:
            found = _globals_in_pickle(data)
        except Exception as e:  # noqa: BLE001 - a stream that cannot be parsed cannot be trusted either
            raise UnsafeCheckpointError(f"{where}: not a readable pickle stream ({e}); refusing to load it") from e
        bad = [f"{m}.{n}" for m, n in found if not _is_allowed(m, n, extra)]
        if bad:
            raise UnsafeCheckpointError(
                f"{where} imports {sorted(set(bad))} when unpickled, which could run code: refusing to load it. "
                "Only load checkpoints you wrote; exports (model.safetensors) carry no code. If you trust this "
                "file and the import is harmless, list it in train.trusted_pickle_globals."
            )


PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".pickle")


def _may_be_unpickled(path: str, name: str) -> bool:
    """A file torch.load could open: by name, or by its first bytes (a zip, or a pickle's PROTO opcode), so
    that renaming a payload does not hide it."""
    if name.endswith(PICKLE_SUFFIXES):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def check_checkpoint_files(folder: str, extra_allowed: tuple[str, ...] = ()) -> int:
    """Scan every file under folder that torch.load could open; raise UnsafeCheckpointError on a dangerous one,
    and on any symbolic link or non-regular file (DeepSpeed would load through a link the walk does not
    enter). ``extra_allowed``: "module.name" globals the user explicitly trusts. Returns how many files were
    scanned."""
    import stat

    n = 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            full = os.path.join(root, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeCheckpointError(f"{full} is a symbolic link; checkpoints hold only files and folders, "
                                            "refusing to load it")
            if name in files and not stat.S_ISREG(st.st_mode):
                raise UnsafeCheckpointError(f"{full} is not a regular file; refusing to load the checkpoint")
        for name in files:
            full = os.path.join(root, name)
            if _may_be_unpickled(full, name):
                check_pickle_file(full, extra_allowed)
                n += 1
    return n
