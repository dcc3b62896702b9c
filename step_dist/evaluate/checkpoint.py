"""Find the student export a user means: an export folder, a run folder holding exports, or either on object
storage. An export is a folder with config.json + model.safetensors (STEPEncoder.save_pretrained)."""
from __future__ import annotations

from step_dist import storage

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def _is_export(uri: str) -> bool:
    loc = storage.parse_uri(uri)
    return storage.exists(loc.join(CONFIG).uri) and storage.exists(loc.join(WEIGHTS).uri)


def _mtime(uri: str) -> float:
    fs, path = storage.fsspec_filesystem(uri)
    info = storage.with_retries(lambda: fs.info(path), f"reading {uri}")
    t = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
    return t.timestamp() if hasattr(t, "timestamp") else float(t)


def resolve_export(uri: str) -> str:
    """The export folder for ``uri``: itself if it is one, else the newest export inside it (by the weights'
    modification time, then by path, so checkpoint_000010 beats checkpoint_000009 on a tie)."""
    loc = storage.parse_uri(uri)
    if _is_export(loc.uri):
        return loc.uri
    try:
        weights = storage.list_files(loc.uri, (WEIGHTS,))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {loc.uri} does not exist: give an export folder or a run folder") from None
    candidates = [w.rsplit("/", 1)[0] for w in weights if w.endswith("/" + WEIGHTS)]
    candidates = [c for c in candidates if storage.exists(storage.parse_uri(c).join(CONFIG).uri)]
    if not candidates:
        raise FileNotFoundError(
            f"no student export under {loc.uri}: expected a folder with {CONFIG} + {WEIGHTS} "
            "(written by STEPEncoder.save_pretrained, e.g. <run>/checkpoint_*/export)"
        )
    return max(candidates, key=lambda c: (_mtime(storage.parse_uri(c).join(WEIGHTS).uri), c))


def load_student(uri: str, map_location: str = "cpu"):
    """(STEPEncoder, the export URI it came from)."""
    from step_dist.model import STEPEncoder

    export = resolve_export(uri)
    return STEPEncoder.from_pretrained(export, map_location=map_location), export
