"""Real faults for the reliability tests and jobs/chaos.py: SIGKILL a process of this driver's Ray instance,
stop the in-process moto S3 server (and bring it back on the same port with its buckets), run a fault from a
thread when a file appears. Nothing here flips a flag inside the code under test."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Callable

import psutil


def ray_worker_processes(title_part: str) -> list[psutil.Process]:
    """Processes of *this* driver's Ray instance (children of its raylet; other Ray instances on the machine
    are never touched) whose process title contains ``title_part`` (e.g. "RayTrainWorker",
    "TeacherTargetsUDF")."""
    import ray._private.worker as w

    node = w._global_node
    if node is None:
        raise RuntimeError("no Ray instance in this process")
    raylets = [p.process.pid for p in node.all_processes.get("raylet", [])]
    out = []
    for rpid in raylets:
        for child in psutil.Process(rpid).children(recursive=True):
            try:
                title = " ".join(child.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if title_part in title and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
    return out


def sigkill_one(title_part: str, timeout_s: float = 120) -> int:
    """SIGKILL the first live Ray process whose title contains ``title_part``; returns its pid."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        procs = ray_worker_processes(title_part)
        if procs:
            pid = procs[0].pid
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no Ray process titled *{title_part}* appeared within {timeout_s} s")


def stop_moto(server) -> None:
    """Take the in-process moto server down: stop serving and close its socket, so clients get 'connection
    refused' (ThreadedMotoServer.stop alone leaves the socket listening, and clients hang instead)."""
    server.stop()
    server._server.server_close()


def start_moto(server) -> None:
    """Serve again on the same port; moto keeps its buckets in-process, so the store comes back whole."""
    server._port = server.port
    server.start()


def max_logged_step(outputs_uri: str) -> int:
    from step_dist import storage

    try:
        data = storage.read_bytes(outputs_uri.rstrip("/") + "/metrics.jsonl")
    except Exception:  # noqa: BLE001 - not written yet, or the store is down
        return 0
    return max((int(json.loads(x)["step"]) for x in data.decode().splitlines() if x.strip()), default=0)


def when(condition: Callable[[], bool], action: Callable[[], object], timeout_s: float = 900) -> threading.Thread:
    """Run ``action`` from a daemon thread as soon as ``condition()`` holds; the thread's ``result`` attribute
    holds what the action returned (or ``error`` what it raised)."""
    def body() -> None:
        deadline = time.time() + timeout_s
        try:
            while time.time() < deadline:
                if condition():
                    th.result = action()
                    return
                time.sleep(0.2)
            th.error = TimeoutError(f"condition not met within {timeout_s} s")
        except BaseException as e:  # noqa: BLE001 - reported to the test
            th.error = e

    th = threading.Thread(target=body, daemon=True)
    th.result, th.error = None, None
    th.start()
    return th
