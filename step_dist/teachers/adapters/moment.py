"""MOMENT (AutonLab) through momentfm's own MOMENTPipeline and its ``embed(reduction="none")``.

MOMENT checkpoints are huggingface_hub ``PyTorchModelHubMixin`` folders (config.json + model.safetensors).
The model takes exactly ``seq_len`` (512) steps in patches of ``patch_len`` (8), with an input mask; shorter
views are left-padded and masked, as in MOMENT's own tutorials, and only patches lying wholly on real data
are kept. RevIN inside the model scales each series, so no scaling here. ``embed`` gives the last encoder
layer only. momentfm pins an old transformers in its metadata but runs with transformers 5: install it with
``pip install --no-deps momentfm`` (the ``moment`` extra lists what it needs besides).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from step_dist.teachers import checkpoint as ck
from step_dist.teachers.protocol import Teacher, TeacherError


class MomentTeacher(Teacher):
    family = "timeseries"
    native_rate_hz = None
    default_scaling = "none"

    def _locate(self) -> None:
        folder = ck.resolve(self.cfg)
        self.local_dir = folder
        self.weight_files = ck.files_under(folder)
        cfg_path = ck.require(self.cfg, folder, ["config.json"])[0]
        ck.require(self.cfg, folder, ["model.safetensors", "pytorch_model.bin"])
        try:
            self.mcfg = json.loads(open(cfg_path).read())
        except ValueError as e:
            raise TeacherError(f"teacher {self.name}: {cfg_path} is not valid JSON ({e})") from e
        if "t5_config" not in self.mcfg or "seq_len" not in self.mcfg:
            raise TeacherError(f"teacher {self.name}: {self.local_dir} is not a MOMENT checkpoint "
                               "(config.json has no t5_config / seq_len)")

    def _load(self) -> None:
        if self.layer != -1:
            raise TeacherError(f"teacher {self.name}: the moment adapter gives the last encoder layer only (layer: -1)")
        try:
            from momentfm import MOMENTPipeline
        except ImportError as e:
            raise TeacherError(f"teacher {self.name}: kind 'moment' needs momentfm, which did not import ({e}); "
                               "pip install 'step-dist[moment]' && pip install --no-deps momentfm") from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            # the reconstruction task matches the published weights (head included), so strict loading holds;
            # embed() never runs the head
            model = MOMENTPipeline.from_pretrained(self.local_dir, model_kwargs={"task_name": "reconstruction"},
                                                   strict=True, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - the mixin raises many types for bad folders
            raise TeacherError(f"teacher {self.name}: cannot load {self.cfg.checkpoint} ({self.local_dir}) as a MOMENT "
                               f"model: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        self.model = model.to(self.device).eval()
        self.context_length = int(model.seq_len)
        self.patch = int(model.patch_len)
        self.min_length = self.patch
        self.dim = int(model.config.d_model)

    def num_tokens(self, prepared_len: int) -> int:
        return min(prepared_len, self.effective_context) // self.patch

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        n, ctx = seqs[0].shape[-1], self.context_length
        b = len(seqs)
        v = np.zeros((b, 1, ctx), dtype=np.float32)
        v[:, 0, ctx - n :] = np.stack(seqs)
        mask = np.zeros((b, ctx), dtype=np.float32)
        mask[:, ctx - n :] = 1.0
        with torch.inference_mode():
            out = self.model.embed(x_enc=torch.from_numpy(v).to(self.device),
                                   input_mask=torch.from_numpy(mask).to(self.device), reduction="none")
        h = out.embeddings[:, 0].float()  # [B, patches, D]
        t = self.num_tokens(n)
        return list(h[:, h.shape[1] - t :].cpu().numpy())
