"""The cluster files in cluster/ are part of the product: they must validate against Ray's own schema, put
every teacher pool and train worker of every recipe on a node type that can host it, agree with each
other (AWS, GCP, KubeRay), keep token auth on, and install step-dist the way the Makefile does."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

import cluster_topology as ct

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
KUBERAY = {"raycluster": CLUSTER / "kuberay" / "raycluster.yaml", "rayjob": CLUSTER / "kuberay" / "rayjob.yaml"}
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
ROLES = {"head", "trainer", "teacher", "ingest"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _recipes() -> list[Path]:
    return sorted((ROOT / "jobs" / "configs").glob("*.yaml"))


def _all_clusters() -> dict[str, dict[str, ct.NodeType]]:
    out = {name: ct.launcher_node_types(path) for name, path in LAUNCHERS.items()}
    out.update({name: ct.kuberay_node_types(path) for name, path in KUBERAY.items()})
    return out


def _by_role(node_types: dict[str, ct.NodeType]) -> dict[str, ct.NodeType]:
    return {n.role: n for n in node_types.values()}


# ------------------------------------------------------------------------------------ schema


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_when_a_launcher_yaml_is_checked_against_rays_schema_then_it_validates(cloud):
    config = _yaml(LAUNCHERS[cloud])
    jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))
    # What `ray up` does before it talks to the cloud: merge the provider's defaults, then Ray's own check,
    # which adds what the schema cannot say (head type exists, max_workers covers every min_workers).
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["available_node_types"]["teacher"]["labels"] == config["available_node_types"]["teacher"]["labels"]


def test_when_a_node_type_has_a_misspelt_key_then_rays_schema_rejects_it():
    config = _yaml(LAUNCHERS["aws"])
    config["available_node_types"]["teacher"]["label"] = config["available_node_types"]["teacher"].pop("labels")
    with pytest.raises(jsonschema.ValidationError, match="label"):
        jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_when_a_launcher_yaml_defines_node_types_then_each_role_carries_its_label_and_gpu_resource(cloud):
    config = _yaml(LAUNCHERS[cloud])
    nodes = _by_role(ct.launcher_node_types(config))
    assert set(nodes) == ROLES
    assert nodes["head"].is_head and nodes["head"].num_gpus == 0
    # The role resource counts the node's GPUs one for one: a pool or worker asking for
    # {GPU: 1, teacher_gpu: 1} then never finds one without the other.
    assert nodes["teacher"].custom_resources == {"teacher_gpu": nodes["teacher"].num_gpus} and nodes["teacher"].num_gpus > 0
    assert nodes["trainer"].custom_resources == {"trainer_gpu": nodes["trainer"].num_gpus} and nodes["trainer"].num_gpus > 0
    assert nodes["ingest"].num_gpus == 0 and nodes["ingest"].custom_resources == {}
    # Labels travel to `ray start` through the node type's `labels` field (RAY_OVERRIDE_LABELS); a
    # hand-written --labels in the start commands would fight it.
    assert "--labels" not in " ".join(config["worker_start_ray_commands"])
    from ray._private.label_utils import validate_node_label_syntax

    for node in nodes.values():
        validate_node_label_syntax(node.labels)


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_when_the_cluster_autoscales_then_workers_scale_to_zero_with_idle_timeouts_and_spot_teachers(cloud):
    config = _yaml(LAUNCHERS[cloud])
    types = config["available_node_types"]
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    assert sum(t["max_workers"] for t in workers.values()) == config["max_workers"]
    for name, t in workers.items():
        assert 0 == t.get("min_workers", 0) < t["max_workers"], name
        assert 0 < t["idle_timeout_s"] <= 900, name
    spot = {
        "aws": lambda nc: nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot",
        "gcp": lambda nc: nc.get("scheduling", {}).get("provisioningModel") == "SPOT",
    }[cloud]
    assert spot(types["teacher"]["node_config"]) and spot(types["ingest"]["node_config"])
    assert not spot(types["trainer"]["node_config"]), "trainers default to on-demand (see the comment in the YAML)"


# ------------------------------------------------------------------------------------ recipes


def test_when_recipes_exist_then_they_place_teachers_and_trainers():
    recipes = _recipes()
    assert recipes, "jobs/configs/*.yaml holds no recipe: the cluster files have nothing to be checked against"
    requests = ct.recipe_requests(recipes)
    selected = {r.label_selector.get(ct.ROLE_LABEL) for r in requests}
    assert {"teacher", "trainer"} <= selected, requests


@pytest.mark.parametrize("cluster", sorted([*LAUNCHERS, *KUBERAY]))
def test_when_recipes_ask_for_labels_and_resources_then_the_cluster_has_node_types_that_host_them(cluster):
    requests = ct.recipe_requests(_recipes())
    assert requests, "no label_selector/resources/resources_per_worker found in jobs/configs/*.yaml"
    nodes = _all_clusters()[cluster]
    problems = ct.unmet_requests(requests, nodes, cluster) + ct.capacity_problems(requests, nodes, cluster)
    assert not problems, "\n".join(problems)


def _mutated_launcher(mutate) -> dict[str, ct.NodeType]:
    config = copy.deepcopy(_yaml(LAUNCHERS["aws"]))
    mutate(config["available_node_types"])
    return ct.launcher_node_types(config)


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (lambda t: t["teacher"].pop("labels"), "teachers[0].pool"),
        (lambda t: t["teacher"]["resources"].pop("teacher_gpu"), "teachers[1].pool"),
        (lambda t: t["trainer"]["labels"].update({ct.ROLE_LABEL: "teacher"}), "train"),
        (lambda t: t["trainer"]["resources"].update(GPU=0), "train"),
    ],
    ids=["teacher-label-missing", "teacher-resource-missing", "trainer-mislabelled", "trainer-without-gpus"],
)
def test_when_a_node_type_loses_what_a_recipe_asks_for_then_the_checker_names_the_recipe_entry(mutation, expected):
    recipe = ROOT / "jobs" / "configs" / "base.yaml"
    requests = ct.recipe_requests([recipe])
    problems = ct.unmet_requests(requests, _mutated_launcher(mutation), "aws.yaml (mutated)")
    assert any(f"base.yaml:{expected} " in p and "aws.yaml (mutated)" in p for p in problems), problems


def test_when_the_cluster_cannot_grow_enough_teacher_gpus_then_the_capacity_check_says_so():
    def one_small_teacher_node(types):
        types["teacher"]["max_workers"] = 1
        types["teacher"]["resources"].update(GPU=1, teacher_gpu=1)

    requests = ct.recipe_requests([ROOT / "jobs" / "configs" / "base.yaml"])
    problems = ct.capacity_problems(requests, _mutated_launcher(one_small_teacher_node), "aws.yaml (mutated)")
    assert any("teacher_gpu" in p for p in problems), problems


def test_when_label_selectors_use_ray_operators_then_the_checker_applies_them():
    labels = {ct.ROLE_LABEL: "teacher"}
    assert ct.label_matches(labels, ct.ROLE_LABEL, "teacher")
    assert ct.label_matches(labels, ct.ROLE_LABEL, "in(teacher,trainer)")
    assert not ct.label_matches(labels, ct.ROLE_LABEL, "!teacher")
    assert not ct.label_matches(labels, ct.ROLE_LABEL, "!in(teacher,ingest)")
    assert ct.label_matches(labels, "missing-key", "!anything")
    assert not ct.label_matches(labels, "missing-key", "anything")


# ------------------------------------------------------------------------------------ KubeRay


def test_when_kuberay_manifests_are_parsed_then_they_are_rayv1_with_autoscaling_and_token_auth():
    for name, path in KUBERAY.items():
        docs = list(yaml.safe_load_all(path.read_text()))
        assert len(docs) == 1 and docs[0]["apiVersion"] == "ray.io/v1", name
        spec = ct.kuberay_cluster_spec(docs[0])
        assert spec["enableInTreeAutoscaling"] is True, name
        assert spec["authOptions"] == {"mode": "token"}, name
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            # Ray's KubeRay autoscaler ignores labels in rayStartParams (it reads the group's own `labels`),
            # so a label there would place work the autoscaler cannot scale for.
            assert "labels" not in group.get("rayStartParams", {}), name
            assert ct.ROLE_LABEL in group.get("labels", {}), name
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group["groupName"]


def test_when_the_rayjob_runs_then_it_starts_pretraining_with_the_base_recipe_on_the_raycluster_spec():
    job, cluster = _yaml(KUBERAY["rayjob"]), _yaml(KUBERAY["raycluster"])
    assert job["kind"] == "RayJob" and cluster["kind"] == "RayCluster"
    entry = job["spec"]["entrypoint"]
    assert "jobs/pretrain.py" in entry and "jobs/configs/base.yaml" in entry
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    # One cluster definition: the RayJob's copy may not drift from raycluster.yaml.
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


@pytest.mark.parametrize("manifest", sorted(KUBERAY))
@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_when_rays_autoscaler_reads_a_kuberay_manifest_then_its_groups_match_the_launcher_node_types(manifest, cloud):
    kube = _by_role(ct.kuberay_node_types(KUBERAY[manifest]))
    launcher = _by_role(ct.launcher_node_types(LAUNCHERS[cloud]))
    assert set(kube) == set(launcher) == ROLES
    for role in ROLES:
        k, l = kube[role], launcher[role]
        assert k.labels == l.labels, role
        assert k.custom_resources == l.custom_resources, role
        assert k.num_gpus == l.num_gpus, role
        assert k.is_head == l.is_head, role
        if not k.is_head:
            assert (k.min_workers, k.max_workers) == (l.min_workers, l.max_workers), role


def test_when_a_kuberay_group_is_scheduled_then_its_pods_request_the_gpus_ray_advertises():
    spec = ct.kuberay_cluster_spec(KUBERAY["raycluster"])
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        ray_gpus = int(group.get("resources", {}).get("GPU", 0))
        assert int(limits.get("nvidia.com/gpu", 0)) == ray_gpus, group["groupName"]
        assert pod.get("nodeSelector"), f"{group['groupName']}: pods need a nodeSelector for their node pool"
        if ray_gpus:
            tolerated = {t["key"] for t in pod.get("tolerations", [])}
            assert "nvidia.com/gpu" in tolerated, group["groupName"]


def test_when_a_kuberay_group_loses_its_label_then_the_groups_no_longer_match():
    doc = copy.deepcopy(_yaml(KUBERAY["raycluster"]))
    teacher = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "teacher")
    teacher.pop("labels")
    kube = ct.kuberay_node_types(doc)
    assert "teacher" not in _by_role(kube)
    problems = ct.unmet_requests(ct.recipe_requests([ROOT / "jobs/configs/base.yaml"]), kube, "raycluster (mutated)")
    assert any("teachers[0].pool" in p for p in problems), problems


# ------------------------------------------------------------------------------------ image, setup, auth


def _ray_image_versions() -> dict[str, str]:
    found = {}
    for path in [*LAUNCHERS.values(), *KUBERAY.values(), CLUSTER / "Dockerfile"]:
        for m in re.finditer(r"rayproject/ray:(\d+\.\d+\.\d+)", path.read_text()):
            found[f"{path.name}: {m.group(0)}"] = m.group(1)
    for path in KUBERAY.values():
        found[f"{path.name}: rayVersion"] = str(ct.kuberay_cluster_spec(path)["rayVersion"])
    return found


def test_when_cluster_files_name_a_ray_version_then_it_is_the_installed_one():
    versions = _ray_image_versions()
    assert any("Dockerfile" in k for k in versions) and any("aws.yaml" in k for k in versions)
    wrong = {k: v for k, v in versions.items() if v != ray.__version__}
    assert not wrong, f"cluster files pin Ray {wrong}, the client has {ray.__version__}: update them together"


def _position(text: str, pattern: str) -> int:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not found"
    return m.start()


@pytest.mark.parametrize(
    "source",
    ["Dockerfile", "aws.yaml", "gcp.yaml"],
)
def test_when_step_dist_is_installed_then_torch_comes_before_deepspeed_before_the_package(source):
    path = CLUSTER / source
    text = path.read_text() if source == "Dockerfile" else "\n".join(_yaml(path)["setup_commands"])
    torch_at = _position(text, r'pip install (?:-q )?"torch>=')
    deepspeed_at = _position(text, r'pip install (?:-q )?(?:-c \S+ )?--no-build-isolation "deepspeed')
    package_at = _position(text, r"\[demo,hf,chronos,sweep\]")
    assert torch_at < deepspeed_at < package_at


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_when_nodes_start_ray_then_token_auth_is_on_and_every_node_has_the_token(cloud):
    config = _yaml(LAUNCHERS[cloud])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert config["file_mounts"].get("/home/ray/.ray/auth_token") == "~/.ray/auth_token"


def test_when_the_readme_or_rayjob_names_repository_files_then_they_exist():
    text = (CLUSTER / "README.md").read_text() + KUBERAY["rayjob"].read_text()
    named = set(re.findall(r"\b((?:jobs|cluster)/[\w./-]+\.(?:py|yaml|md))\b", text)) | {"cluster/Dockerfile"}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"cluster/README.md or the RayJob name files that do not exist: {missing}"


# ------------------------------------------------------------------------------------ local topology


@pytest.mark.slow  # three Ray nodes on 2 cores: ~20 s
def test_when_the_topology_helper_reads_a_launcher_yaml_then_ray_cluster_utils_starts_those_nodes():
    args = ct.local_node_args(LAUNCHERS["aws"])
    assert set(args) == ROLES
    assert args["teacher"]["resources"] == {"teacher_gpu": 4.0} and args["teacher"]["num_cpus"] == 4
    with ct.local_cluster(args):
        seen = {
            n["Labels"].get(ct.ROLE_LABEL): n["Resources"]
            for n in ray.nodes()
            if n["Alive"]
        }
        assert set(seen) == {"head", "teacher", "trainer"}
        assert seen["teacher"]["teacher_gpu"] == 4 and "trainer_gpu" not in seen["teacher"]
        assert seen["trainer"]["trainer_gpu"] == 8 and seen["trainer"]["CPU"] == 8
