"""Shared pieces of the Hugging Face adapters: locating a saved model folder, remote-code policy, layers."""
from __future__ import annotations

import json
import os

from step_dist.teachers import checkpoint as ck
from step_dist.teachers.protocol import Teacher, TeacherError

WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def locate_hf(t: Teacher) -> dict:
    """Resolve the folder, record every file in it for the fingerprint, return its config.json."""
    folder = ck.resolve(t.cfg)
    t.local_dir = folder
    t.weight_files = ck.files_under(folder)  # weights, config, preprocessor and any shipped model code
    cfg_path = ck.require(t.cfg, folder, ["config.json"])[0]
    ck.require(t.cfg, folder, list(WEIGHT_NAMES))
    try:
        return json.loads(open(cfg_path).read())
    except ValueError as e:
        raise TeacherError(f"teacher {t.name}: {cfg_path} is not valid JSON ({e})") from e


def check_remote_code(t: Teacher, config: dict) -> None:
    if config.get("auto_map") and not t.cfg.trust_remote_code:
        raise TeacherError(
            f"teacher {t.name}: checkpoint {t.cfg.checkpoint} ships its own model code "
            f"({sorted(config['auto_map'])} in config.json); it runs only with trust_remote_code: true in this "
            "teacher's config. Read the code in the checkpoint folder first."
        )


def load_error(t: Teacher, e: Exception) -> TeacherError:
    return TeacherError(f"teacher {t.name}: cannot load {t.cfg.checkpoint} ({t.local_dir}) as a {t.cfg.kind} model: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def pick_layer(t: Teacher, out) -> "object":
    hs = getattr(out, "hidden_states", None)
    if t.layer == -1 and getattr(out, "last_hidden_state", None) is not None:
        return out.last_hidden_state
    if hs is None:
        raise TeacherError(f"teacher {t.name}: the model returned no hidden_states; cannot take layer {t.layer}")
    if not -len(hs) <= t.layer < len(hs):
        raise TeacherError(f"teacher {t.name}: layer {t.layer} out of range; the model has {len(hs)} hidden states "
                           "(0 = embeddings, -1 = last)")
    return hs[t.layer]


def local_only() -> dict:
    # never reach a hub at run time, even if the environment forgot HF_HUB_OFFLINE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return {"local_files_only": True}
