"""A plain export of the student: config.json + model.safetensors in a local folder or under an s3:// / gs://
prefix. Loading needs only torch and safetensors (no Ray, no DeepSpeed, no pickle)."""
from __future__ import annotations

import dataclasses
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from step_dist import storage
from step_dist.config import ConfigError, from_dict
from step_dist.model.config import StudentConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "step-dist-student"
FORMAT_VERSION = 1


def save(model: torch.nn.Module, config: StudentConfig, uri: str) -> None:
    loc = storage.parse_uri(uri)
    storage.makedirs(loc.uri)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dataclasses.asdict(config)}
    storage.write_bytes(loc.join(WEIGHTS_NAME).uri, save_safetensors(state, metadata={"format": "pt"}))
    # config last: a folder with a config.json is complete
    storage.write_bytes(loc.join(CONFIG_NAME).uri, json.dumps(meta, indent=2).encode())


def load(uri: str) -> tuple[StudentConfig, dict[str, torch.Tensor]]:
    loc = storage.parse_uri(uri)
    cfg_uri, w_uri = loc.join(CONFIG_NAME).uri, loc.join(WEIGHTS_NAME).uri
    try:
        meta = json.loads(storage.read_bytes(cfg_uri))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no {CONFIG_NAME} at {loc.uri}: give the folder written by STEPEncoder.save_pretrained"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{cfg_uri} is not valid JSON ({e}): the export is damaged; export it again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ConfigError(f"{cfg_uri} is not a step-dist student export (format {found!r})")
    version = meta.get("format_version", 0)
    if not isinstance(version, int):
        raise ConfigError(f"{cfg_uri}: format_version {version!r} is not an integer: the export is damaged")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"{cfg_uri} has format version {version}, newer than this step-dist ({FORMAT_VERSION}): upgrade step-dist"
        )
    config = from_dict(StudentConfig, meta.get("config"), where="student.")
    try:
        state = load_safetensors(storage.read_bytes(w_uri))
    except FileNotFoundError:
        raise FileNotFoundError(f"{w_uri} is missing: the export at {loc.uri} is incomplete; export it again") from None
    except SafetensorError as e:
        raise ConfigError(f"{w_uri} is not a readable safetensors file ({e}): the export is damaged") from None
    return config, state
