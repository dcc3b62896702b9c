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


def _globals_in_pickle(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) the stream would import. STACK_GLOBAL takes its two names from the stack, so the
    strings pushed right before it are tracked, memo reads included (a payload can memoize "os"/"system",
    push harmless names, pop them and fetch the real ones back); anything less direct is reported as
    <unknown> and refused."""
    found: list[tuple[str, str]] = []
    tail: list[str] = []  # strings on top of the stack, most recent last
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
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
            return [(f"{path}:{n}", z.read(n)) for n in z.namelist() if n.endswith(".pkl")]
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


def check_checkpoint_files(folder: str, extra_allowed: tuple[str, ...] = ()) -> int:
    """Scan every .pt/.pth/.pkl/.bin/.ckpt file under folder; raise UnsafeCheckpointError on a dangerous one.
    ``extra_allowed``: "module.name" globals the user explicitly trusts. Returns how many files were scanned."""
    n = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith((".pt", ".pth", ".pkl", ".bin", ".ckpt", ".pickle")):
                check_pickle_file(os.path.join(root, name), extra_allowed)
                n += 1
    return n
