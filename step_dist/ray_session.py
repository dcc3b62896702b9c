"""Which Ray a command runs on: the one already initialised in this process, the cluster at RAY_ADDRESS (set by
`ray job submit`, or by the user: an address, or "auto" for a cluster started with `ray start` on this
machine), else a fresh local instance of the command's own on loopback.

A fresh instance is never an accidental attach: ray.init() without an address joins whatever `ray start`
cluster happens to run on the machine (another user's, a test's), and refuses num_cpus when it does."""
from __future__ import annotations

import os


def init_ray(num_cpus: int | None = None, **kwargs):
    """ray, initialised as above. ``num_cpus`` sizes a local instance (the logical CPUs its pools and
    workers need); it is ignored on a cluster, whose nodes declare their own."""
    import ray

    from step_dist import console

    if ray.is_initialized():
        return ray
    console.quiet_ray_here()
    kwargs = {**console.ray_init_kwargs(), **kwargs}
    address = os.environ.get("RAY_ADDRESS") or ""
    if address and address != "local":
        ray.init(address=address, **kwargs)
    else:
        # a local instance stays on loopback (Ray otherwise binds to the machine's outside address)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    console.announce_logs()
    return ray
