"""Render kustomize overlays: with the real `kustomize` (or `kubectl kustomize`) when installed, otherwise with
the small subset implemented here — exactly the features deploy/k8s uses:

- `resources` (files and directories with a kustomization.yaml), `namespace`, `images` (newName/newTag);
- `patches` from files: strategic-merge patches addressed by their apiVersion/kind/metadata.name, or with a
  `target` (group/version/kind/name); JSON 6902 patches (a list of operations; replace/add/remove) with a
  `target`. Strategic merge merges maps recursively, deletes keys set to null, merges the lists of named
  objects (containers, initContainers, env, volumes, volumeMounts) of built-in kinds by `name`, and replaces
  all other lists (as kustomize does for custom resources, whose schema it does not know).

tests/deploy/test_k8s.py renders both ways and compares the results whenever a real kustomize is present.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
                  "PersistentVolume", "ClusterIssuer", "ClusterTriggerAuthentication"}
NAMED_LISTS = {"containers", "initContainers", "env", "volumes", "volumeMounts"}
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io"}


PINNED = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "kustomize"
"""Where `make setup` installs the pinned kustomize (`go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1`)."""


def external_command() -> list[str] | None:
    """The real kustomize, if this machine has one: the pinned one, one on PATH, or the one in kubectl."""
    if PINNED.is_file():
        return [str(PINNED), "build"]
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    return None


def render_external(directory: Path, command: list[str]) -> list[Obj]:
    out = subprocess.run([*command, str(directory)], capture_output=True, text=True, check=True, timeout=120)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render(directory: Path) -> list[Obj]:
    """Render a kustomization directory with the subset implemented here."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kustomization.get("patches", []):
        _apply_patch_file(objects, directory / patch["path"], patch.get("target"))
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "patches", "images", "namespace"}
    if unsupported:
        raise ValueError(f"{directory}: kustomize features not implemented here: {sorted(unsupported)}")
    if namespace := kustomization.get("namespace"):
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    return objects


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _matches(obj: Obj, target: dict[str, str]) -> bool:
    group, version = _group_version(obj["apiVersion"])
    checks = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    return all(checks[key] == value for key, value in target.items() if key in checks)


def _apply_patch_file(objects: list[Obj], path: Path, target: dict[str, str] | None) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    if len(docs) == 1 and isinstance(docs[0], list):
        if target is None:
            raise ValueError(f"{path}: a JSON 6902 patch needs a target")
        matched = [o for o in objects if _matches(o, target)]
        if not matched:
            raise ValueError(f"{path}: target {target} matches nothing")
        for obj in matched:
            for op in docs[0]:
                _json6902(obj, op)
        return
    for patch in docs:
        own = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
        matched = [o for o in objects if _matches(o, target or own)]
        if not matched:
            raise ValueError(f"{path}: no resource {own}")
        for obj in matched:
            builtin = _group_version(obj["apiVersion"])[0] in BUILTIN_GROUPS
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
            merged = _merge(obj, body, builtin)
            obj.clear()
            obj.update(merged)


def _merge(base: Any, patch: Any, builtin: bool, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v, builtin, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if builtin and key in NAMED_LISTS and isinstance(base, list) and isinstance(patch, list):
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, b in enumerate(merged) if b.get("name") == item.get("name")), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = _merge(merged[index], item, builtin)
        return merged
    return copy.deepcopy(patch)


def _json6902(obj: Obj, op: dict[str, Any]) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op["op"] in ("replace", "remove") and (last not in parent if isinstance(parent, dict) else False):
        raise ValueError(f"{op['path']}: no such field in {obj['kind']}/{obj['metadata']['name']}")
    if op["op"] in ("replace", "add"):
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        else:
            parent[last] = op["value"]
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise ValueError(f"unsupported JSON patch operation {op['op']}")


def _set_image(objects: list[Obj], image: dict[str, str]) -> None:
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") if "template" in spec else None
        if obj["kind"] == "CronJob":
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        if not pod:
            continue
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
