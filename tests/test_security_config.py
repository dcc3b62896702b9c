"""Static guards over what the project ships: weights never unpickled freely, Ray token auth never turned off,
no credentials in recipes or cluster files."""
from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _py_files(*folders: str):
    for folder in folders:
        for d, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(d, f)


def _shipped_text_files():
    for folder in ("cluster", "jobs", "step_dist"):
        for d, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith((".yaml", ".yml", ".py", ".md", ".json", ".sh")) or f.startswith("Dockerfile"):
                    yield os.path.join(d, f)
    for f in ("Makefile", "README.md", "pyproject.toml"):
        if os.path.exists(os.path.join(ROOT, f)):
            yield os.path.join(ROOT, f)


def test_when_the_library_loads_torch_files_then_every_call_passes_weights_only_true():
    offenders = []
    for path in _py_files("step_dist", "jobs"):
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "loads") \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("pickle", "dill", "cloudpickle"):
                offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} ({node.func.value.id}.{node.func.attr})")
    assert not offenders, f"unsafe deserialisation (use safetensors or torch.load(..., weights_only=True)): {offenders}"


def test_when_clusters_and_jobs_are_configured_then_ray_token_auth_is_never_switched_off():
    off = re.compile(r"RAY_AUTH_MODE\s*[=:]\s*['\"]?disabled|mode:\s*disabled|--disable-auth", re.I)
    hits = [os.path.relpath(p, ROOT) for p in _shipped_text_files() if off.search(open(p, errors="ignore").read())]
    assert not hits, f"token authentication switched off in {hits}"
    for name in ("aws.yaml", "gcp.yaml"):
        text = open(os.path.join(ROOT, "cluster", name)).read()
        assert text.count("RAY_AUTH_MODE=token") >= 2, f"cluster/{name}: head and workers must start with token auth"
    for name in ("raycluster.yaml", "rayjob.yaml"):
        text = open(os.path.join(ROOT, "cluster", "kuberay", name)).read()
        assert re.search(r"authOptions:\s*\n\s*mode:\s*token", text), f"cluster/kuberay/{name}: authOptions.mode token"


def test_when_recipes_and_cluster_files_ship_then_they_hold_no_credentials():
    secret_keys = re.compile(r"(aws_secret_access_key|secret_key|AWS_SECRET_ACCESS_KEY|auth_token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}")
    akia = re.compile(r"\bAKIA[0-9A-Z]{16}\b")
    hits = []
    for p in _shipped_text_files():
        text = open(p, errors="ignore").read()
        if secret_keys.search(text) or akia.search(text):
            hits.append(os.path.relpath(p, ROOT))
    assert not hits, f"credentials written into shipped files: {hits}"
