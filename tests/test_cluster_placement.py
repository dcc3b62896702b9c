"""The cluster files' topology on one machine: teacher pools land only on teacher nodes, train workers only on
trainer nodes, when the tiny pretraining job runs with the placement the recipes ask for."""
from __future__ import annotations

import os

import pytest
import ray

from tests import cluster_topology as ct
from tests.pretrain_runs import load_tiny, losses, overrides
from tests.signal_factory import write_synthetic_shards

pytestmark = pytest.mark.slow

AWS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster", "aws.yaml")


def test_when_the_tiny_job_runs_on_the_cluster_topology_then_teachers_and_trainers_stay_on_their_nodes(tmp_path):
    from ray.util.state import list_actors

    from step_dist.train import pretrain

    with ct.local_cluster(ct.local_node_args(AWS, cpus_per_gpu=1, head_cpus=3)):
        role_of = {n["NodeID"]: n["Labels"].get(ct.ROLE_LABEL) for n in ray.nodes() if n["Alive"]}

        shards = write_synthetic_shards(str(tmp_path / "shards"), 12, seed=7)
        cfg = load_tiny(overrides(**{
            "name": "placed", "storage": str(tmp_path / "runs"), "data.train": shards,
            "train.num_workers": 2, "train.zero_stage": 2, "train.max_steps": 2, "train.checkpoint_every": 2,
            "train.label_selector": "{step-dist/role: trainer}", "train.resources_per_worker": "{trainer_gpu: 1}",
        }))
        for te in cfg.teachers:  # what jobs/configs/base.yaml asks of every teacher pool
            te.pool.label_selector = {ct.ROLE_LABEL: "teacher"}
            te.pool.resources = {"teacher_gpu": 1.0}
        result = pretrain(cfg)
        assert sorted(losses(result.outputs_uri)) == [1, 2]

        actors = list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
        teachers = [a for a in actors if "TeacherTargetsUDF" in (a.get("repr_name") or "") + (a.get("class_name") or "")]
        workers = [a for a in actors if "RayTrainWorker" in (a.get("class_name") or "")]
        assert teachers and workers, f"actors seen: {sorted({a.get('class_name') for a in actors})}"
        assert {role_of.get(a["node_id"]) for a in teachers} == {"teacher"}
        assert {role_of.get(a["node_id"]) for a in workers} == {"trainer"}
