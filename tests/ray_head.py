"""A real Ray head started with `ray start --head` on 127.0.0.1, in its own process group, for job and
multi-node tests. Stopped by killing that group (never `ray stop`, which would stop every Ray on the machine)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    def __init__(self, num_cpus: int = 8, labels: dict[str, str] | None = None, resources: dict[str, float] | None = None):
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
        # the cluster's `python` is the project's environment, as on a node set up from cluster/ (an activated venv)
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
        self.env.pop("RAY_ADDRESS", None)
        args = [
            os.path.join(VENV_BIN, "ray"), "start", "--head", "--block",
            f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
        ]
        if labels:
            args.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
        if resources:
            import json

            args.append("--resources=" + json.dumps(resources))
        self.log = open(os.path.join(self.temp_dir, "ray-start.log"), "w")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def wait_ready(self, timeout_s: float = 180) -> None:
        import urllib.request

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ray start exited: " + open(self.log.name).read()[-3000:])
            try:
                urllib.request.urlopen(self.dashboard + "/api/version", timeout=2)
                return
            except Exception:  # noqa: BLE001 - the dashboard is still starting (or answers 401 with auth on)
                try:
                    import urllib.error

                    urllib.request.urlopen(self.dashboard + "/api/version", timeout=2)
                except urllib.error.HTTPError:
                    return  # up, asking for the token
                except Exception:  # noqa: BLE001
                    pass
            time.sleep(1)
        raise RuntimeError(f"Ray head not ready after {timeout_s} s: " + open(self.log.name).read()[-3000:])

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
