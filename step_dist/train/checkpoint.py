"""What a checkpoint holds, and how a worker writes and restores it.

    checkpoint_XXXX/
      deepspeed/<tag>/...     DeepSpeed state: every rank writes its own partition (ZeRO 0-3)
      trainer_state.json      step, epoch, position in the epoch, samples seen, skipped steps
      rng/rank_<r>.json       Python, NumPy and torch RNG state of each rank
      export/                 the student alone (config.json + model.safetensors): STEPEncoder.from_pretrained

Every rank reports the same folder name; Ray Train merges the ranks' files into one checkpoint in storage and
only registers it once all ranks have uploaded, so a half-written checkpoint is never picked up on resume.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches consumed in the current epoch (resume skips this many)
    samples_seen: int = 0
    skipped_steps: int = 0  # micro-steps skipped for a non-finite loss or gradient

    @property
    def tag(self) -> str:
        return f"step_{self.step:08d}"


def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(s: dict) -> None:
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))


def write_worker_files(folder: str, state: TrainerState, rank: int) -> None:
    os.makedirs(os.path.join(folder, "rng"), exist_ok=True)
    with open(os.path.join(folder, "rng", f"rank_{rank}.json"), "w") as f:
        json.dump(rng_state(), f)
    if rank == 0:
        with open(os.path.join(folder, "trainer_state.json"), "w") as f:
            json.dump(asdict(state), f, indent=2)


def read_trainer_state(folder: str) -> TrainerState:
    path = os.path.join(folder, "trainer_state.json")
    if not os.path.exists(path):
        raise RuntimeError(f"checkpoint {folder} has no trainer_state.json: it is incomplete; remove it to resume from an earlier one")
    try:
        with open(path) as f:
            return TrainerState(**json.load(f))
    except (ValueError, TypeError) as e:  # not JSON, not a mapping, or keys this version does not know
        raise RuntimeError(f"checkpoint {folder}: trainer_state.json is damaged or from another version ({e}); "
                           "remove the checkpoint to resume from an earlier one") from None


def restore_rng(folder: str, rank: int) -> None:
    path = os.path.join(folder, "rng", f"rank_{rank}.json")
    if os.path.exists(path):  # a run resumed on more ranks than it saved with starts the new ranks fresh
        with open(path) as f:
            set_rng_state(json.load(f))
