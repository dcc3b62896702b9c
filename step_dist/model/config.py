"""StudentConfig: every size and patching choice of the STEP student in one typed dataclass.

Named sizes:
  tiny   2 blocks x 64   (tests, CPU seconds)
  small  6 blocks x 256
  base  17 blocks x 768  (~120M parameters, the paper's size)

Axial attention puts two attention layers in every block (over time, then over channels), 4·D² parameters
each. To land on the paper's ~120M at 17 x 768 the base MLP uses ratio 2 (2·2·D²), so a block holds 12·D²,
the same as a standard Transformer block with MLP ratio 4. tiny and small keep ratio 4.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from step_dist.config import ConfigError

PATCHING_MODES = ("adaptive", "fixed")


@dataclass
class StudentConfig:
    name: str = "tiny"
    # Transformer trunk
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    gradient_checkpointing: bool = False  # recompute blocks in backward: trades time for activation memory
    # channel-independent convolutional stem (width stays small so memory is ~ stem_width x T per channel)
    stem_width: int = 16
    stem_kernel: int = 7
    # patching: Gaussian windows; each token samples its window at `sub_points` Gaussian sub-kernels so the
    # token keeps the shape inside its window (sub_points=1 is a plain Gaussian-weighted average)
    patching: str = "adaptive"  # "adaptive" (stride from an MLP of log T) or "fixed" (ablation)
    sub_points: int = 4
    window_ratio: float = 2.0  # window length / stride (the paper: about 2S)
    s_max: float = 400.0  # soft bound on the stride (Huber penalty above)
    n_min: int = 5  # soft lower bound on tokens per channel
    n_max: int = 200  # soft upper bound on tokens per channel
    max_tokens: int | None = None  # hard cap on tokens per channel (None = n_max); keeps attention flat in T
    init_tokens: int = 64  # the stride MLP starts at S = 1 + T / init_tokens
    patch_hidden: int = 32  # hidden width of the stride MLP
    huber_delta: float = 1.0  # on log-ratio excesses, see patching.py
    fixed_stride: float = 16.0  # fixed mode: constant stride ...
    fixed_tokens: int | None = None  # ... or, when set, a constant token count per record
    # statistics compensation
    stats_compensation: bool = True
    std_floor_rel: float = 1e-6  # std floor relative to |mean| (float32 resolution of the raw values)
    std_floor_abs: float = 1e-30  # absolute std floor (GW strain is ~1e-21, so this must be tiny)
    # positions: sinusoid over token centres in samples; the slowest period must exceed the longest record
    max_period: float = 1e7

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"student d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.d_model % 2:
            raise ConfigError(f"student d_model={self.d_model} must be even (sinusoidal positions)")
        if self.patching not in PATCHING_MODES:
            raise ConfigError(f"student patching={self.patching!r}: use one of {PATCHING_MODES}")
        if not 1 <= self.n_min <= self.n_max:
            raise ConfigError(f"student token bounds need 1 <= n_min <= n_max, got {self.n_min}, {self.n_max}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"student max_tokens must be >= 1 or null, got {self.max_tokens}")
        for key in ("s_max", "window_ratio", "fixed_stride", "huber_delta", "std_floor_abs"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"student {key} must be > 0, got {getattr(self, key)}")
        for key in ("n_layers", "stem_width", "sub_points", "init_tokens", "patch_hidden", "stem_kernel"):
            if getattr(self, key) < 1:
                raise ConfigError(f"student {key} must be >= 1, got {getattr(self, key)}")

    @property
    def token_cap(self) -> int:
        return self.max_tokens if self.max_tokens is not None else self.n_max

    @classmethod
    def from_recipe(cls, spec: dict, where: str = "student.") -> "StudentConfig":
        """From a recipe's ``student`` section: ``size`` (a named size, default tiny) plus any field overridden,
        values checked against the field types; errors name the key (``where`` + key)."""
        from step_dist.config import from_dict

        spec = dict(spec or {})
        size = spec.pop("size", "tiny")
        if size not in NAMED:
            raise ConfigError(f"{where}size: unknown student size {size!r}: use one of {sorted(NAMED)}")
        return from_dict(cls, {**NAMED[size], "name": size, **spec}, where=where)

    @classmethod
    def named(cls, name: str, **overrides) -> "StudentConfig":
        """A named size ("tiny", "small", "base") with any field overridden by keyword."""
        if name not in NAMED:
            raise ConfigError(f"unknown student size {name!r}: use one of {sorted(NAMED)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown student config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**{**NAMED[name], "name": name, **overrides})


NAMED: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, mlp_ratio=4.0, stem_width=16),
    "small": dict(d_model=256, n_layers=6, n_heads=8, mlp_ratio=4.0, stem_width=32),
    "base": dict(d_model=768, n_layers=17, n_heads=12, mlp_ratio=2.0, stem_width=64),
}
