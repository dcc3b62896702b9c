"""Per-step metrics on rank 0: metrics.jsonl (always), TensorBoard or MLflow, a progress line, a loss plot."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator


class StepWindow:
    """What one optimizer step cost: wall and CPU time since the window opened, time spent waiting for data,
    and the samples and tokens trained, for the step's throughput metrics."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.wait = 0.0
        self.samples = 0
        self.tokens = 0

    def next_batch(self, micro_batches: Iterator[Any]) -> Any:
        """The next micro-batch (None at the end of the epoch), its wait counted as data wait."""
        t = time.perf_counter()
        rows = next(micro_batches, None)
        self.wait += time.perf_counter() - t
        return rows

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def clock(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) since the window opened."""
        return time.perf_counter() - self.t0, time.process_time() - self.cpu0

    def rates(self, elapsed: float, cpu: float, samples: float, tokens: float) -> dict[str, float]:
        """Throughput of the step given the samples and tokens of all ranks."""
        return dict(
            samples_per_s=samples / max(elapsed, 1e-9),
            tokens_per_s=tokens / max(elapsed, 1e-9),
            data_wait_frac=self.wait / max(elapsed, 1e-9),
            # CPU seconds of this worker process per wall second: well under 1 on a CPU run means the
            # process waited for a core (other processes) or for data; on GPU, near 1 means a CPU-bound loop
            cpu_util=cpu / max(elapsed, 1e-9),
        )


class Tracker:
    def __init__(self, local_dir: str, kind: str = "tensorboard", run_name: str = "", enabled: bool = True):
        self.enabled = enabled
        self.local_dir = local_dir
        self._tb = None
        self._mlflow = None
        if not enabled:
            return
        os.makedirs(local_dir, exist_ok=True)
        self._jsonl = open(os.path.join(local_dir, "metrics.jsonl"), "a", buffering=1)
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(local_dir, "tensorboard"))
        elif kind == "mlflow":
            try:
                import mlflow
            except ImportError as e:
                raise RuntimeError("tracker: mlflow needs the mlflow extra: pip install 'step-dist[mlflow]'") from e
            mlflow.start_run(run_name=run_name)
            self._mlflow = mlflow

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({k.replace("/", "_"): v for k, v in metrics.items()}, step=step)

    def flush(self) -> None:
        if self.enabled and self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None:
            self._mlflow.end_run()


def progress_line(step: int, max_steps: int, m: dict[str, Any]) -> str:
    per_teacher = " ".join(f"{k[5:]}={v:.4f}" for k, v in sorted(m.items()) if k.startswith("loss/"))
    return (
        f"step {step}/{max_steps} | loss {m['loss']:.4f} ({per_teacher}) | penalty {m['penalty']:.4f} "
        f"| grad_norm {m.get('grad_norm', float('nan')):.3f} | lr {m['lr']:.2e} | {m['samples_per_s']:.1f} samples/s "
        f"| {m['tokens_per_s']:.0f} tokens/s | data wait {100 * m['data_wait_frac']:.0f}%"
    )


def read_metrics(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss_curve(metrics_jsonl: str, out_png: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_jsonl)
    # training and validation rows of one step are merged; a resumed run re-logs nothing twice, but the last
    # value per step and key wins to be safe
    by_step: dict[int, dict[str, Any]] = {}
    for r in rows:
        by_step.setdefault(r["step"], {}).update(r)
    steps = sorted(by_step)
    keys = ["loss"] + sorted({k for r in rows for k in r if k.startswith("loss/")})
    val_keys = sorted({k for r in rows for k in r if k.startswith("val/loss/")})
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {}
    for k in keys:
        pts = [(s, by_step[s][k]) for s in steps if k in by_step[s]]
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"train {k}", lw=2 if k == "loss" else 1)
        colors[k] = line.get_color()
    for k in val_keys:
        pts = [(s, by_step[s][k]) for s in steps if k in by_step[s]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o--", color=colors.get(k[4:]), label=f"validation {k[4:]}", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss")
    ax.set_title("step-dist pretraining (lines: train, dashed: held-out validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
