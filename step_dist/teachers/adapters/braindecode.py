"""EEG foundation models through braindecode: CBraMod, LaBraM (``Labram``), BIOT and EEGPT.

A checkpoint is what braindecode's ``save_pretrained`` writes and ``from_pretrained`` reads (the Hugging Face
hub mixin; the ``braindecode/*-pretrained`` repositories): ``config.json`` (every ``__init__`` argument, from
``get_config()``) and ``model.safetensors`` (+ ``pytorch_model.bin``). ``variant`` names the model class.
The model is rebuilt with ``from_config`` and its weights loaded strictly here (safetensors first, otherwise
``torch.load(weights_only=True)``), because ``from_pretrained`` loads with ``strict=False`` by default and so
leaves weights a truncated or foreign checkpoint lacks at random values without a word. Only the classification
head (``final_layer``) is left out: targets never use it, and pretraining exports have none. Class-valued config
entries (``activation``, ``norm_layer``...) are imported by braindecode from their dotted names; only
``torch.nn`` and braindecode classes are accepted.

Every model sees a record's channels jointly; the rate is the checkpoint's ``sfreq`` (else the pretraining
rate). Targets are token embeddings before any classification head, one token per time step of the model's
own grid; where the model keeps one token per channel and time step, the channels are averaged. ``layer``
counts blocks: -1 (or the last block) = the model's own output tokens, after its final norm where it has one;
k = block k's output; 0 = the embeddings entering block 1, where they carry the signal.

- CBraMod (200 Hz, 1 s patches): the criss-cross encoder's output ``[C, P, D]``, channel mean -> one token
  per patch. Not ``return_features``: that applies ``proj_out``, which in the published weights is the
  pretraining head reconstructing each patch's 200 samples (CBraMod's own fine-tuning replaces it with
  Identity). Its positional encoding is a convolution, so any channel count and length work (tail samples
  short of a whole patch are dropped). Views up to ``options.context_seconds`` (default: the checkpoint's
  ``n_times``, else 30 s, its pretraining segments).
- LaBraM (200 Hz, 1 s patches): the patch tokens of ``forward(return_features=True)`` (after the final norm,
  [CLS] left out), ``[C x P, D]`` -> channel mean. Channels are looked up by name in
  ``LABRAM_CHANNEL_ORDER`` (``ch_names``), so it needs ``channel_mode: montage``. braindecode sizes its time
  embedding by ``n_times``: a view must hold exactly that many samples (shorter views give no target).
- BIOT (200 Hz): per channel an STFT (``n_fft`` = 1 s, hop 0.5 s) embedded with a channel token; the linear
  transformer's output tokens ``[C x frames, D]`` -> channel mean (the encoder itself would average them all
  into one vector). The channel token is found by name where a montage is given (in the checkpoint's
  ``chs_info`` or ``BIOT_CHANNEL_ORDER``), else by position. Views up to ``options.context_seconds``
  (default: the checkpoint's ``n_times``). Last layer only.
- EEGPT (256 Hz, 64-sample patches): the ``embed_num`` summary tokens of each patch, concatenated
  (``[P, embed_num x D]``, what ``return_features`` gives and EEGPT's linear probe reads); they already
  summarise all channels. Fixed shape: exactly the checkpoint's ``n_chans`` channels and ``n_times`` samples.
  Channel embeddings follow the montage's names (``EEGPT_CHANNELS``) when the model has no channel projection.
  No layer 0 (the summary tokens enter as learned constants).

Scaling (``auto``): each channel is z-scored after resampling and cropping. The models were pretrained on fixed
units (CBraMod and LaBraM on 100 uV, BIOT on each channel's 95th percentile of |x|); records do not carry their
units (volts from MNE, microvolts from most EDF files), and a per-channel z-score puts any of them on one scale.
Set ``scaling: none`` for data already in the model's units. Targets are computed in float32 (no autocast:
these models are small).
"""
from __future__ import annotations

import contextlib
import inspect
import json

import numpy as np
import torch

from step_dist.teachers import checkpoint as ck
from step_dist.teachers.prepare import standardize
from step_dist.teachers.protocol import Teacher, TeacherError, TeacherInputError

MODELS = {"cbramod": "CBraMod", "labram": "Labram", "biot": "BIOT", "eegpt": "EEGPT"}
PRETRAINING_RATE = {"cbramod": 200.0, "labram": 200.0, "biot": 200.0, "eegpt": 256.0}
WEIGHTS = ["model.safetensors", "pytorch_model.bin"]
SAFE_CLASS_PREFIXES = ("torch.nn.", "braindecode.")


class BraindecodeTeacher(Teacher):
    family = "eeg"
    multichannel = True
    default_scaling = "none"  # "auto" z-scores each channel in prepare() below
    in_channels: int | None = None  # the model takes exactly this many channels (None: any)
    max_channels: int | None = None  # ... or at most this many

    # ---- checkpoint ------------------------------------------------------------------------------------
    def _locate(self) -> None:
        self.arch = (self.cfg.variant or "").strip().lower()
        if self.arch not in MODELS:
            raise TeacherError(f"teacher {self.name}: kind braindecode needs variant set to the model class, one of "
                               f"{sorted(MODELS.values())}; got {self.cfg.variant!r}")
        folder = ck.resolve(self.cfg)
        self.local_dir = folder
        self.weight_files = ck.files_under(folder)
        cfg_path = ck.require(self.cfg, folder, ["config.json"])[0]
        self.weights = ck.require(self.cfg, folder, WEIGHTS)[0]
        try:
            self.bd_config = json.loads(open(cfg_path).read())
        except ValueError as e:
            raise TeacherError(f"teacher {self.name}: {cfg_path} is not valid JSON ({e})") from e
        if not isinstance(self.bd_config, dict):
            raise TeacherError(f"teacher {self.name}: {cfg_path} does not hold a braindecode model config")
        self.model_class = MODELS[self.arch]

    def _load(self) -> None:
        cls = getattr(_braindecode_models(self), self.model_class)
        model = self._build(cls)
        # targets come before any classification head: a fine-tuned checkpoint's head and a pretraining export
        # without one load alike (every other weight must fit exactly)
        model.final_layer = torch.nn.Identity()
        state = ck.load_state_dict(self.cfg, self.weights)
        state = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
        ck.load_strict(self.cfg, model, state, self.weights)
        self.model = model.to(self.device).eval()
        self.native_rate_hz = float(self.bd_config.get("sfreq") or PRETRAINING_RATE[self.arch])
        getattr(self, f"_setup_{self.arch}")()
        if self.cfg.max_context and self.cfg.max_context < self.min_length:
            raise TeacherError(f"teacher {self.name}: max_context {self.cfg.max_context} is below the {self.min_length} "
                               f"samples a {self.model_class} view needs")

    def _build(self, cls):
        where = f"teacher {self.name}: {self.cfg.checkpoint} ({self.local_dir})"
        for arg, p in inspect.signature(cls.__init__).parameters.items():
            v = self.bd_config.get(arg)
            if isinstance(p.default, type) and isinstance(v, str) and "." in v and not v.startswith(SAFE_CLASS_PREFIXES):
                raise TeacherError(f"{where}: config.json names {v!r} for {arg}; only torch.nn and braindecode "
                                   "classes are loaded from a checkpoint")
        config = dict(self.bd_config)
        if config.get("n_outputs") is None:  # a head-less export: any size builds, the head is dropped anyway
            config["n_outputs"] = 1
        try:
            return cls.from_config(config)
        except Exception as e:  # noqa: BLE001 - a foreign config fails in many ways inside __init__
            raise TeacherError(f"{where} is not a braindecode {self.model_class} checkpoint: its config.json does not "
                               f"build one ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                               "is variant the class it was saved from?") from e

    # ---- per-model shapes ------------------------------------------------------------------------------
    def _setup_cbramod(self) -> None:
        m = self.model
        self.patch = int(m._patch_size)
        self.min_length = self.patch
        self.context_length = self._context_seconds(m._n_times or 30 * self.native_rate_hz) // self.patch * self.patch
        self.dim = int(m.patch_embedding.d_model)
        self.block = self._block(len(m.encoder.layers), allow_embeddings=True)

    def _setup_labram(self) -> None:
        from braindecode.models.labram import LABRAM_CHANNEL_ORDER

        m = self.model
        if not m.neural_tokenizer:
            raise TeacherError(f"teacher {self.name}: this Labram checkpoint is in neural-decoder mode (neural_tokenizer: "
                               "false), not LaBraM's encoder")
        self.names = self._named_channels(LABRAM_CHANNEL_ORDER, "LABRAM_CHANNEL_ORDER")
        self.in_channels = len(self.names)
        self.n_patches = int(m.n_path)
        self.context_length = self.min_length = self._fixed_window(self.n_patches * int(m.patch_size))
        self.dim = int(m.embed_dim)
        block = self._block(len(m.blocks), allow_embeddings=True)
        self.tap = None if block is None else (m.pos_drop if block == 0 else m.blocks[block - 1])

    def _setup_biot(self) -> None:
        from braindecode.models.biot import BIOT_CHANNEL_ORDER

        enc = self.model.encoder
        if self.layer not in (-1, int(self.model.num_layers)):
            raise TeacherError(f"teacher {self.name}: the BIOT adapter gives the last layer only (layer: -1)")
        n_tokens = enc.channel_tokens.num_embeddings
        known = self._checkpoint_channels() or BIOT_CHANNEL_ORDER[:n_tokens]
        if self.cfg.channel_mode == "montage":
            names = self._named_channels(known, "the checkpoint's channels")
            index = {n.upper(): i for i, n in enumerate(known)}
            enc.index = torch.tensor([index[n.upper()] for n in names], dtype=torch.long, device=self.device)
        self.max_channels = int(enc.index.numel())
        self.n_fft, self.hop = int(enc.n_fft), int(enc.hop_length)
        self.min_length = self.n_fft
        # the sinusoidal position table holds max_len frames per channel
        self.context_length = min(self._context_seconds(self.model.n_times),
                                  self.n_fft + (enc.positional_encoding.pe.shape[1] - 1) * self.hop)
        self.dim = int(self.model.embed_dim)

    def _setup_eegpt(self) -> None:
        from braindecode.models.eegpt import CHANNEL_DICT

        m = self.model
        n_chans = int(m.n_chans)
        self.in_channels = n_chans
        if self.cfg.channel_mode == "montage":
            if len(self.cfg.montage) != n_chans:
                raise TeacherError(f"teacher {self.name}: the EEGPT checkpoint takes exactly {n_chans} channels, the "
                                   f"montage names {len(self.cfg.montage)}")
            if m.chan_proj_type == "none":  # channel embeddings by electrode name
                names = self._named_channels(list(CHANNEL_DICT), "EEGPT_CHANNELS")
                m.chans_id = torch.tensor([[CHANNEL_DICT[n.upper()] for n in names]], dtype=torch.long, device=self.device)
            elif self._checkpoint_channels() and [n.upper() for n in self.cfg.montage] != [
                    n.upper() for n in self._checkpoint_channels()]:
                raise TeacherError(f"teacher {self.name}: this EEGPT projects its input channels by position; the "
                                   f"montage must list its channels {self._checkpoint_channels()} in that order")
        self.n_patches = int(m.target_encoder.num_patches[1])
        self.context_length = self.min_length = self._fixed_window(int(m.target_encoder.patch_embed.n_times))
        self.embed_num = int(m.embed_num)
        self.dim = self.embed_num * int(m.embed_dim)
        block = self._block(len(m.target_encoder.blocks))
        if block == 0:
            raise TeacherError(f"teacher {self.name}: EEGPT's layer 0 holds only its learned summary tokens; use 1 or more")
        self.tap = None if block is None else m.target_encoder.blocks[block - 1]

    # ---- shared helpers --------------------------------------------------------------------------------
    def _block(self, n_blocks: int, allow_embeddings: bool = False) -> int | None:
        """None = the model's own final tokens; k = the output of block k (0 = the embeddings entering block 1)."""
        layer = self.layer if self.layer >= 0 else n_blocks + 1 + self.layer
        lowest = 0 if allow_embeddings else 1
        if not lowest <= layer <= n_blocks:
            raise TeacherError(f"teacher {self.name}: layer {self.layer} out of range; this {self.model_class} has "
                               f"{n_blocks} blocks ({'0 = embeddings, ' if allow_embeddings else ''}-1 = last)")
        return None if layer == n_blocks else layer

    def _checkpoint_channels(self) -> list[str]:
        return [c["ch_name"] for c in (self.bd_config.get("chs_info") or []) if isinstance(c, dict) and "ch_name" in c]

    def _named_channels(self, known: list[str], known_name: str) -> list[str]:
        if self.cfg.channel_mode != "montage":
            raise TeacherError(f"teacher {self.name}: {self.model_class} identifies EEG channels by name; set "
                               f"channel_mode: montage and montage: the record's channel names found in {known_name}")
        upper = {n.upper() for n in known}
        unknown = [n for n in self.cfg.montage if n.strip().upper() not in upper]
        if unknown:
            shown = ", ".join(known[:24]) + (", ..." if len(known) > 24 else "")
            raise TeacherError(f"teacher {self.name}: montage channels {unknown} are not in {known_name} of this "
                               f"{self.model_class} ({shown}); rename them to those labels or leave them out")
        return [n.strip() for n in self.cfg.montage]

    def _context_seconds(self, default_samples) -> int:
        secs = self.cfg.options.get("context_seconds")
        return int(round(float(secs) * self.native_rate_hz)) if secs else int(default_samples)

    def _fixed_window(self, n_times: int) -> int:
        if self.cfg.options.get("context_seconds"):
            raise TeacherError(f"teacher {self.name}: {self.model_class} takes exactly its checkpoint's n_times "
                               f"({n_times} samples); options.context_seconds cannot change it")
        return n_times

    # ---- running ---------------------------------------------------------------------------------------
    def prepare(self, values: np.ndarray, rate_hz: float, record_id: str = "<record>",
                channel_names: list[str] | None = None, allow_short: bool = False) -> np.ndarray:
        x = super().prepare(values, rate_hz, record_id, channel_names, allow_short)
        return standardize(x) if self.cfg.scaling == "auto" and x.shape[1] else x

    def num_tokens(self, prepared_len: int) -> int:
        n = min(prepared_len, self.effective_context)
        if n < self.min_length:
            return 0
        if self.arch == "cbramod":
            return n // self.patch
        if self.arch == "biot":
            return (n - self.n_fft) // self.hop + 1
        return self.n_patches

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        c, n = seqs[0].shape
        self._check_channels(c)
        if self.num_tokens(n) == 0:  # shorter than one patch / STFT window / the fixed window: no target
            return [np.zeros((0, self.dim), dtype=np.float32) for _ in seqs]
        x = torch.from_numpy(np.stack(seqs)).to(self.device)
        with torch.inference_mode():
            h = getattr(self, f"_tokens_{self.arch}")(x)
        return list(h.float().cpu().numpy())

    def _check_channels(self, c: int) -> None:
        if self.in_channels is not None and c != self.in_channels:
            need = f"exactly {self.in_channels}"
        elif self.max_channels is not None and c > self.max_channels:
            need = f"at most {self.max_channels}"
        else:
            return
        raise TeacherInputError(f"teacher {self.name}: the {self.model_class} checkpoint takes {need} channels, the "
                                f"prepared view has {c}; set channel_mode: montage with its channel names")

    def _tokens_cbramod(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = x[..., : x.shape[-1] // self.patch * self.patch]  # whole patches only
        h = m.patch_embedding(m.rearrange(x), None)  # [B, C, P, D]
        if self.block is None:
            h = m.encoder(h)
        elif self.block > 0:
            with _tap(m.encoder.layers[self.block - 1]) as seen:
                m.encoder(h)
            h = seen[0]
        return h.mean(dim=1)

    def _tokens_labram(self, x: torch.Tensor) -> torch.Tensor:
        with _tap(self.tap) as seen:
            h = self.model(x, return_features=True, ch_names=self.names)["features"]  # [B, C*P, D], [CLS] dropped
        if seen:
            h = seen[0][:, 1:]
        return h.reshape(h.shape[0], x.shape[1], self.n_patches, h.shape[-1]).mean(dim=1)

    def _tokens_biot(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.model.encoder
        with _tap(enc.transformer) as seen:
            enc(x)  # its own mean over every token is dropped; the tokens are tapped
        h = seen[0]  # [B, C*frames, D], channel-major
        return h.reshape(h.shape[0], x.shape[1], -1, h.shape[-1]).mean(dim=1)

    def _tokens_eegpt(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        with _tap(self.tap) as seen:
            z = m.target_encoder(m.chan_proj(x), m.chans_id)  # [B, P, embed_num, D]
        if not seen:
            return z.flatten(2)
        s = seen[0][:, -self.embed_num :]  # [B*P, embed_num, D]: the summary tokens of block k
        return s.reshape(x.shape[0], self.n_patches, -1)


@contextlib.contextmanager
def _tap(module):
    """Collects the output of ``module`` (a copy) while the block runs; nothing when module is None."""
    seen: list[torch.Tensor] = []
    if module is None:
        yield seen
        return
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    try:
        yield seen
    finally:
        handle.remove()


def _braindecode_models(t: Teacher):
    try:
        import braindecode.models as models
    except (ImportError, OSError) as e:
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if "torchaudio" in str(e):
            raise TeacherError(
                f"teacher {t.name}: braindecode does not import because torchaudio's compiled ops do not load with this "
                f"torch ({msg}); run: python -m step_dist.teachers.adapters._torchaudio_compat (make install does)") from e
        raise TeacherError(f"teacher {t.name}: braindecode does not import ({msg}); pip install 'step-dist[eeg]'") from e
    return models
