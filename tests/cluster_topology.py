"""What the cluster files in cluster/ offer, and what the recipes in jobs/configs ask for.

Three readers put every cluster description in one shape (``NodeType``: labels plus Ray resources):
  - ``launcher_node_types``: a Ray cluster launcher YAML (cluster/aws.yaml, cluster/gcp.yaml);
  - ``kuberay_node_types``: a KubeRay RayCluster or RayJob, read through Ray's own KubeRay autoscaler code,
    so the result is what the autoscaler will actually see;
  - ``local_node_args``: a launcher YAML turned into ``ray.cluster_utils.Cluster.add_node`` keyword
    arguments, so a test can start the same topology on one machine (CPU stand-ins for GPUs).
``recipe_requests`` walks recipe YAMLs for placement requests and ``unmet_requests`` says which of them no
node type of a cluster can host.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any, Iterator

import yaml

ROLE_LABEL = "step-dist/role"
# Ray's predefined resources; everything else on a node type is a custom resource.
STANDARD_RESOURCES = frozenset({"CPU", "GPU", "TPU", "memory", "object_store_memory"})
# Keys of a recipe mapping that place work on nodes.
PLACEMENT_KEYS = ("label_selector", "resources", "resources_per_worker")


@dataclasses.dataclass(frozen=True)
class NodeType:
    name: str
    labels: dict[str, str]
    resources: dict[str, int]
    min_workers: int = 0
    max_workers: int = 0
    is_head: bool = False

    @property
    def role(self) -> str | None:
        return self.labels.get(ROLE_LABEL)

    @property
    def custom_resources(self) -> dict[str, int]:
        return {k: v for k, v in self.resources.items() if k not in STANDARD_RESOURCES}

    @property
    def num_gpus(self) -> int:
        return int(self.resources.get("GPU", 0))


@dataclasses.dataclass(frozen=True)
class Request:
    """One placement request found in a recipe: a teacher pool, the train workers, ..."""

    source: str  # recipe file
    path: str  # where in the recipe, e.g. teachers[0].pool
    label_selector: dict[str, str]
    resources: dict[str, float]
    count: int = 1  # how many of these at once: a pool's size, the train workers' num_workers

    def describe(self) -> str:
        return f"{self.source}:{self.path} (label_selector={self.label_selector}, resources={self.resources})"


def _load(path_or_doc: str | Path | dict) -> dict:
    if isinstance(path_or_doc, dict):
        return path_or_doc
    return yaml.safe_load(Path(path_or_doc).read_text())


# ---------------------------------------------------------------------------------------------- readers


def launcher_node_types(path_or_config: str | Path | dict) -> dict[str, NodeType]:
    """Node types of a cluster launcher YAML, by node type name."""
    config = _load(path_or_config)
    head = config.get("head_node_type")
    out = {}
    for name, spec in (config.get("available_node_types") or {}).items():
        out[name] = NodeType(
            name=name,
            labels=dict(spec.get("labels") or {}),
            resources={k: int(v) for k, v in (spec.get("resources") or {}).items()},
            min_workers=int(spec.get("min_workers", 0)),
            max_workers=int(spec.get("max_workers", 0)),
            is_head=name == head,
        )
    return out


def kuberay_cluster_spec(path_or_doc: str | Path | dict) -> dict:
    """The RayCluster spec of a RayCluster manifest, or the rayClusterSpec of a RayJob."""
    doc = _load(path_or_doc)
    kind = doc.get("kind")
    if kind == "RayCluster":
        return doc["spec"]
    if kind == "RayJob":
        return doc["spec"]["rayClusterSpec"]
    raise ValueError(f"expected a RayCluster or RayJob manifest, got kind={kind!r}")


def kuberay_autoscaling_config(path_or_doc: str | Path | dict) -> dict:
    """The autoscaling config Ray's KubeRay autoscaler derives from the manifest (validated by Ray)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    doc = _load(path_or_doc)
    ray_cr = {
        "metadata": {"name": doc["metadata"]["name"], "namespace": doc["metadata"].get("namespace", "default")},
        "spec": copy.deepcopy(kuberay_cluster_spec(doc)),
    }
    return _derive_autoscaling_config_from_ray_cr(ray_cr)


def kuberay_node_types(path_or_doc: str | Path | dict) -> dict[str, NodeType]:
    """Groups of a KubeRay manifest as node types, by group name (the head group is 'headgroup')."""
    config = kuberay_autoscaling_config(path_or_doc)
    return launcher_node_types(config)


def recipe_requests(recipe_paths: list[str | Path]) -> list[Request]:
    """Every mapping in the recipes that holds a label_selector, resources or resources_per_worker key.

    GPUs asked for next to them (``num_gpus: n``, or ``use_gpu: true`` meaning one GPU per worker) count as a
    GPU resource of the same request, so a request is met only by a node type that has everything at once."""
    found = []
    for path in recipe_paths:
        doc = yaml.safe_load(Path(path).read_text())
        for where, mapping in _walk(doc, ""):
            if not any(k in mapping for k in PLACEMENT_KEYS):
                continue
            resources: dict[str, float] = {}
            for key in ("resources", "resources_per_worker"):
                resources.update({k: float(v) for k, v in (mapping.get(key) or {}).items()})
            if mapping.get("num_gpus"):
                resources["GPU"] = float(mapping["num_gpus"])
            elif mapping.get("use_gpu") is True:
                resources.setdefault("GPU", 1.0)
            if mapping.get("num_cpus"):
                resources["CPU"] = float(mapping["num_cpus"])
            selector = {str(k): str(v) for k, v in (mapping.get("label_selector") or {}).items()}
            count = mapping.get("size", mapping.get("num_workers", 1))
            if isinstance(count, (list, tuple)):  # elastic (min, max) workers: the run needs at least min
                count = count[0]
            found.append(Request(str(path), where or "<root>", selector, resources, int(count)))
    return found


def _walk(node: Any, where: str) -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            if k not in PLACEMENT_KEYS:
                yield from _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")


# ---------------------------------------------------------------------------------------------- checks


def label_matches(labels: dict[str, str], key: str, wanted: str) -> bool:
    """Ray's label selector syntax: 'v', '!v', 'in(a,b)', '!in(a,b)'."""
    have = labels.get(key)
    negate = wanted.startswith("!")
    expr = wanted[1:] if negate else wanted
    if expr.startswith("in(") and expr.endswith(")"):
        hit = have in {v.strip() for v in expr[3:-1].split(",")}
    else:
        hit = have == expr
    return hit != negate


def can_host(node: NodeType, request: Request) -> bool:
    if not all(label_matches(node.labels, k, v) for k, v in request.label_selector.items()):
        return False
    return all(node.resources.get(k, 0) >= v for k, v in request.resources.items())


def unmet_requests(requests: list[Request], node_types: dict[str, NodeType], cluster: str) -> list[str]:
    """One message per request that no node type of ``cluster`` can host, saying what to change."""
    problems = []
    offered = "; ".join(f"{n.name}: labels={n.labels} resources={n.resources}" for n in node_types.values())
    for req in requests:
        if not any(can_host(n, req) for n in node_types.values()):
            problems.append(
                f"{req.describe()} cannot be placed on any node type of {cluster} ({offered}). "
                f"Add the label/resource to the node type meant for it in {cluster}, or fix the recipe."
            )
    return problems


def capacity_problems(requests: list[Request], node_types: dict[str, NodeType], cluster: str) -> list[str]:
    """Custom resources the recipes need at once (e.g. 2 teacher pools x 2 actors x teacher_gpu 1) that
    exceed what the cluster offers when every node type is scaled to its max_workers."""
    supply: dict[str, int] = {}
    for node in node_types.values():
        copies = 1 if node.is_head else node.max_workers
        for k, v in node.custom_resources.items():
            supply[k] = supply.get(k, 0) + copies * v
    problems = []
    for source in sorted({r.source for r in requests}):
        demand: dict[str, float] = {}
        for r in (r for r in requests if r.source == source):
            for k, v in r.resources.items():
                if k not in STANDARD_RESOURCES:
                    demand[k] = demand.get(k, 0) + r.count * v
        for k, need in sorted(demand.items()):
            if need > supply.get(k, 0):
                problems.append(
                    f"{source} needs {need:g} x {k} at once but {cluster} offers at most {supply.get(k, 0)} "
                    f"(node types at max_workers): raise max_workers of the node type with {k}, or shrink the recipe."
                )
    return problems


# ---------------------------------------------------------------------------------------------- local


def local_node_args(
    path_or_config: str | Path | dict,
    *,
    cpus_per_gpu: int = 1,
    cpus_for_cpu_nodes: int = 2,
    head_cpus: int = 2,
) -> dict[str, dict[str, Any]]:
    """``Cluster.add_node`` keyword arguments per node role ('head', 'teacher', 'trainer', 'ingest').

    Labels and custom resources (teacher_gpu, trainer_gpu, ...) are copied as the launcher YAML sets them,
    so recipes place work exactly as on the cloud. GPUs become CPU stand-ins: no ``num_gpus``, and
    ``cpus_per_gpu`` logical CPUs per GPU so that one CPU actor or train worker fits per GPU the node has.
    Use the 'head' entry as ``head_node_args`` of ``ray.cluster_utils.Cluster``."""
    out: dict[str, dict[str, Any]] = {}
    for node in launcher_node_types(path_or_config).values():
        role = node.role or node.name
        if node.is_head:
            num_cpus = head_cpus
        elif node.num_gpus:
            num_cpus = cpus_per_gpu * node.num_gpus
        else:
            num_cpus = cpus_for_cpu_nodes
        out[role] = {
            "num_cpus": num_cpus,
            "labels": dict(node.labels),
            "resources": {k: float(v) for k, v in node.custom_resources.items()},
        }
    return out


@contextlib.contextmanager
def local_cluster(node_args: dict[str, dict[str, Any]], roles: tuple[str, ...] = ("teacher", "trainer")):
    """A real multi-node Ray (ray.cluster_utils) from ``local_node_args``: head plus one node per role, this
    process connected to it; everything shut down afterwards (the session's own Ray restarts on demand)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args=node_args["head"])
    try:
        for role in roles:
            cluster.add_node(**node_args[role])
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
