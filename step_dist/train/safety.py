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

ALLOWED_PREFIXES = ("torch", "collections", "numpy", "deepspeed", "_codecs", "enum", "pathlib", "argparse", "copyreg")
ALLOWED_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray", "range", "getattr", "dict", "list", "tuple", "int", "float", "str", "bool", "object"}
# even inside allowed packages these would let a payload run code
DENIED_NAMES = {"getattr", "eval", "exec", "compile", "__import__", "open", "system", "popen", "load", "loads"}


class UnsafeCheckpointError(RuntimeError):
    pass


def _globals_in_pickle(data: bytes) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            mod, name = arg.split(" ", 1)
            found.append((mod, name))
        elif op.name == "STACK_GLOBAL":
            if len(strings) >= 2:
                found.append((strings[-2], strings[-1]))
            else:
                found.append(("<unknown>", "<unknown>"))
        elif op.name in ("INST", "OBJ") and arg:
            mod, name = str(arg).split(" ", 1) if " " in str(arg) else (str(arg), "")
            found.append((mod, name))
    return found


def _is_allowed(mod: str, name: str) -> bool:
    if name.split(".")[-1] in DENIED_NAMES and not (mod.startswith("torch") and name in ("load",)):
        return False
    if mod in ("builtins", "__builtin__"):
        return name in ALLOWED_BUILTINS - {"getattr"}
    return mod.split(".")[0] in ALLOWED_PREFIXES


def _pickle_streams(path: str) -> list[tuple[str, bytes]]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":  # torch.save zip format: the object graph is data.pkl
        with zipfile.ZipFile(path) as z:
            return [(f"{path}:{n}", z.read(n)) for n in z.namelist() if n.endswith(".pkl")]
    with open(path, "rb") as f:
        return [(path, f.read())]


def check_pickle_file(path: str) -> None:
    for where, data in _pickle_streams(path):
        try:
            found = _globals_in_pickle(data)
        except Exception as e:  # noqa: BLE001 - a stream that cannot be parsed cannot be trusted either
            raise UnsafeCheckpointError(f"{where}: not a readable pickle stream ({e}); refusing to load it") from e
        bad = [f"{m}.{n}" for m, n in found if not _is_allowed(m, n)]
        if bad:
            raise UnsafeCheckpointError(
                f"{where} imports {sorted(set(bad))} when unpickled, which could run code: refusing to load it. "
                "Only load checkpoints you wrote; exports (model.safetensors) carry no code."
            )


def check_checkpoint_files(folder: str) -> None:
    """Scan every .pt/.pth/.pkl/.bin file under folder; raise UnsafeCheckpointError on a dangerous one."""
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith((".pt", ".pth", ".pkl", ".bin", ".ckpt")):
                check_pickle_file(os.path.join(root, name))
