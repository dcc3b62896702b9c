"""The driver's progress line for a pretraining run: steps done / max, loss, throughput, data wait, ETA.

Read from the run's own metrics.jsonl and restarts.jsonl in storage (what `step-dist status` reads), not
from the workers' output: it works the same whether the workers run here or on a cluster, and the workers'
own lines can stay in their log files.
"""
from __future__ import annotations

import threading

from step_dist.progress import Progress
from step_dist.status.files import read_jsonl
from step_dist.status.run import seconds_per_step

POLL_S = 2.0


class RunWatcher:
    def __init__(self, outputs_uri: str, max_steps: int, interval_s: float | None = None):
        self.outputs = outputs_uri.rstrip("/")
        kw = {} if interval_s is None else {"interval_s": interval_s}
        self.progress: Progress | None = None
        self.max_steps = max_steps
        self._kw = kw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="step-dist-run-watcher", daemon=True)
        self._val_seen: set[int] = set()
        self._restarts_seen = 0

    def __enter__(self) -> "RunWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll()  # the last steps, whatever the timing of the thread
        if self.progress is not None:
            self.progress.close()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a storage hiccup must not end the run; the next poll retries
                pass

    def poll(self) -> None:
        rows = read_jsonl(self.outputs + "/metrics.jsonl")
        restarts = read_jsonl(self.outputs + "/restarts.jsonl")
        train = [r for r in rows if "loss" in r and "step" in r]
        if self.progress is None:
            if not train:
                return
            # a resumed run starts its count where its checkpoint left off (the rate counts this session only)
            self.progress = Progress("pretrain", total=self.max_steps, unit="steps", start=int(train[0]["step"]) - 1,
                                     **self._kw)
        for r in restarts[self._restarts_seen:]:
            self.progress.write(f"[step-dist] restarted from the checkpoint at step {r.get('resumed_from_step')} "
                                f"({r.get('steps_lost', 0)} step(s) to train again)")
        self._restarts_seen = len(restarts)
        for r in rows:
            if "val/distill_loss" in r and int(r["step"]) not in self._val_seen:
                self._val_seen.add(int(r["step"]))
                self.progress.write(f"[step-dist] validation at step {r['step']}: distill loss {r['val/distill_loss']:.4f}, "
                                    f"effective rank tokens {r.get('val/erank_tokens', float('nan')):.1f}")
        if train:
            last = train[-1]
            extra = (f"loss {last['loss']:.4f} | {last.get('samples_per_s', 0.0):.1f} samples/s | "
                     f"data wait {100 * last.get('data_wait_frac', 0.0):.0f}%")
            sps = seconds_per_step(train)
            self.progress.set(int(last["step"]), extra, rate=1.0 / sps if sps else None)
