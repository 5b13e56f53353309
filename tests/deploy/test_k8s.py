"""deploy/k8s: both overlays render, every object validates against its schema, and the project's rules hold."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from shared.kafka import ALL_TOPICS
from tests.deploy import kustomize
from tests.deploy.conftest import DEPLOY, ROOT, load_rule_groups

K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.33.0"
STRIMZI_SCHEMAS = {p.stem: json.loads(p.read_text()) for p in (K8S / "crds" / "strimzi").glob("*.json")}
APPS = ("ingest", "aggregator", "publisher", "workflow")
HPA_APPS = ("ingest", "publisher")
KEDA_APPS = ("aggregator", "workflow")

Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, kustomize.render(K8S / "overlays" / request.param)


def _of(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _containers(deployment: Obj) -> Iterator[Obj]:
    yield from deployment["spec"]["template"]["spec"]["containers"]


class TestRendering:
    def test_overlays_render_with_the_implemented_subset(self, rendered: tuple[str, list[Obj]]) -> None:
        overlay, objects = rendered
        namespace = "kp-dev" if overlay == "dev" else "kommunal-pulse"
        assert len(objects) > 40
        for obj in objects:
            assert obj["metadata"].get("namespace", namespace) == namespace, obj["metadata"]

    @pytest.mark.parametrize("overlay", OVERLAYS)
    def test_subset_renders_exactly_like_real_kustomize(self, overlay: str) -> None:
        command = kustomize.external_command()
        if command is None:
            pytest.skip("neither kustomize nor kubectl on this machine: rendered with the Python subset only")
        directory = K8S / "overlays" / overlay

        def key(o: Obj) -> tuple[str, str, str]:
            return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]

        ours = {key(o): o for o in kustomize.render(directory)}
        real = {key(o): o for o in kustomize.render_external(directory, command)}
        assert ours.keys() == real.keys()
        for k, obj in ours.items():
            assert obj == real[k], k

    def test_an_unimplemented_feature_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
        with pytest.raises(ValueError, match="commonLabels"):
            kustomize.render(tmp_path)

    def test_a_patch_for_a_missing_resource_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n")
        (tmp_path / "patch.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {x: '2'}\n")
        (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\npatches: [{path: patch.yaml}]\n")
        with pytest.raises(ValueError, match="no resource"):
            kustomize.render(tmp_path)


class TestSchemas:
    def test_builtin_kinds_validate_strictly(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        checked = 0
        for obj in objects:
            if "." in obj["apiVersion"].split("/")[0] and not obj["apiVersion"].startswith(
                ("networking.k8s.io", "rbac.authorization.k8s.io")
            ):
                continue
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked += 1
        assert checked >= 30

    def test_strimzi_resources_match_the_stored_schemas(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        strimzi = [o for o in objects if o["apiVersion"].startswith("kafka.strimzi.io/")]
        assert {o["kind"] for o in strimzi} == set(STRIMZI_SCHEMAS)
        for obj in strimzi:
            jsonschema.Draft202012Validator(STRIMZI_SCHEMAS[obj["kind"]]).validate(obj)

    def test_stored_strimzi_schema_rejects_a_typo(self) -> None:
        topic = {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
                 "metadata": {"name": "t", "labels": {"strimzi.io/cluster": "c"}},
                 "spec": {"partitions": 3, "replica": 3}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(STRIMZI_SCHEMAS["KafkaTopic"]).validate(topic)

    def test_keda_cnpg_and_prometheus_operator_resources_match_their_crds(
        self, rendered: tuple[str, list[Obj]]
    ) -> None:
        _, objects = rendered
        results = _node_validate(objects)
        validated = {r["kind"] for r in results if r["errors"] is not None}
        assert {"keda.sh/v1alpha1/ScaledObject", "postgresql.cnpg.io/v1/Cluster",
                "monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"} <= validated
        failures = [r for r in results if r["errors"]]
        assert not failures, failures

    def test_crd_validation_catches_a_wrong_type(self) -> None:
        bad = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
               "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicaCount": "six", "triggers": []}}
        (result,) = _node_validate([bad])
        assert result["errors"]
        assert "maxReplicaCount" in result["errors"][0]

    def test_every_kind_is_validated_somewhere(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        custom = [o for o in objects if "." in o["apiVersion"].split("/")[0]
                  and not o["apiVersion"].startswith(("networking.k8s.io", "rbac.authorization.k8s.io"))]
        unknown = [r for r in _node_validate(custom) if r["errors"] is None
                   and not r["kind"].startswith("kafka.strimzi.io/")]
        assert not unknown, f"custom resources without a schema: {unknown}"


def _node_validate(objects: list[Obj]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@kubernetes-models" / "keda").is_dir():
        pytest.fail("node and the @kubernetes-models packages are needed: run `make setup` (npm install)")
    out = subprocess.run([node, str(Path(__file__).with_name("validate_crds.mjs"))], input=json.dumps(objects),
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


class TestProjectRules:
    def test_every_deployment_has_probes_limits_and_a_hardened_security_context(
        self, rendered: tuple[str, list[Obj]]
    ) -> None:
        _, objects = rendered
        deployments = _of(objects, "Deployment")
        assert {d["metadata"]["name"] for d in deployments} == set(APPS)
        for dep in deployments:
            pod = dep["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in _containers(dep):
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][kind]), (dep["metadata"]["name"], kind)
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                name, _, tag = c["image"].rpartition(":")
                assert name, c["image"]
                assert tag not in ("", "latest"), c["image"]

    def test_every_deployment_has_a_pdb_a_network_policy_and_a_service_monitor(
        self, rendered: tuple[str, list[Obj]]
    ) -> None:
        _, objects = rendered
        for dep in _of(objects, "Deployment"):
            labels = dep["spec"]["template"]["metadata"]["labels"]
            name = dep["metadata"]["name"]
            assert any(_selects(p["spec"]["selector"]["matchLabels"], labels)
                       for p in _of(objects, "PodDisruptionBudget")), f"{name}: no PDB"
            policies = [n for n in _of(objects, "NetworkPolicy")
                        if _selects(n["spec"]["podSelector"]["matchLabels"], labels)]
            assert policies, f"{name}: no NetworkPolicy"
            assert all({"Ingress", "Egress"} == set(p["spec"]["policyTypes"]) for p in policies)
            services = [s for s in _of(objects, "Service") if _selects(s["spec"]["selector"], labels)]
            assert services, f"{name}: no Service"
            monitors = [m for m in _of(objects, "ServiceMonitor")
                        if any(_selects(m["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
                               for s in services)]
            assert monitors, f"{name}: no ServiceMonitor"
            assert monitors[0]["spec"]["endpoints"][0]["path"] == "/metrics"

    def test_config_and_secrets_referenced_by_pods_exist_or_are_made_by_an_operator(
        self, rendered: tuple[str, list[Obj]]
    ) -> None:
        _, objects = rendered
        configmaps = {o["metadata"]["name"] for o in _of(objects, "ConfigMap")}
        # kp-ckm (the Cell Key Method secret) is created by the operator of the cluster, see docs/operations.md
        operator_secrets = {"kp-postgres-app", "kp-ckm"} | {u["metadata"]["name"] for u in _of(objects, "KafkaUser")}
        secrets = {o["metadata"]["name"] for o in _of(objects, "Secret")} | operator_secrets
        for workload in [*_of(objects, "Deployment"), *_of(objects, "Job")]:
            for c in workload["spec"]["template"]["spec"]["containers"]:
                for source in c.get("envFrom", []):
                    assert source["configMapRef"]["name"] in configmaps
                for env in c.get("env", []):
                    if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                        assert ref["name"] in secrets, ref

    def test_each_deployment_is_scaled_by_exactly_one_autoscaler(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        for dep in _of(objects, "Deployment"):
            name = dep["metadata"]["name"]
            assert "replicas" not in dep["spec"], f"{name}: replicas belong to the autoscaler"
            hpas = [h for h in _of(objects, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
            scaled = [s for s in _of(objects, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name]
            assert len(hpas) + len(scaled) == 1, name

    def test_autoscaling_hpa_for_http_services_and_keda_within_partitions(
        self, rendered: tuple[str, list[Obj]]
    ) -> None:
        _, objects = rendered
        partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in _of(objects, "KafkaTopic")}
        for name in HPA_APPS:
            hpa = _one(objects, "HorizontalPodAutoscaler", name)
            assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
            assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        for name in KEDA_APPS:
            so = _one(objects, "ScaledObject", name)
            assert so["spec"]["scaleTargetRef"]["name"] == name
            topics = [t["metadata"]["topic"] for t in so["spec"]["triggers"] if t["type"] == "kafka"]
            assert topics, name
            for topic in topics:
                assert so["spec"]["maxReplicaCount"] <= partitions[topic], (name, topic)

    def test_topics_match_the_project_topic_definitions(self, rendered: tuple[str, list[Obj]]) -> None:
        overlay, objects = rendered
        topics = {t["spec"]["topicName"]: t["spec"] for t in _of(objects, "KafkaTopic")}
        assert set(topics) == {t.name for t in ALL_TOPICS}
        pool = _one(objects, "KafkaNodePool", "kp-kafka-pool")
        for t in ALL_TOPICS:
            spec = topics[t.name]
            assert spec["partitions"] == t.partitions
            assert str(spec["config"]["retention.ms"]) == t.config["retention.ms"]
            assert spec["replicas"] <= pool["spec"]["replicas"]
            assert spec["config"]["min.insync.replicas"] < spec["replicas"] or spec["replicas"] == 1
        assert (pool["spec"]["replicas"] == 1) == (overlay == "dev")

    def test_kafka_users_only_reach_existing_topics(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        topics = {t["spec"]["topicName"] for t in _of(objects, "KafkaTopic")}
        users = {u["metadata"]["name"]: u for u in _of(objects, "KafkaUser")}
        assert set(users) == {"kp-ingest", "kp-aggregator", "kp-workflow", "kp-keda"}
        for user in users.values():
            for acl in user["spec"]["authorization"]["acls"]:
                resource = acl["resource"]
                if resource["type"] == "topic":
                    assert resource["patternType"] == "literal"
                    assert resource["name"] in topics
        ingest_writes = {a["resource"]["name"] for a in users["kp-ingest"]["spec"]["authorization"]["acls"]
                         if "Write" in a["operations"]}
        assert ingest_writes == {"usage.events.v1", "usage.events.rejected.v1"}
        reads = {a["resource"]["name"] for a in users["kp-ingest"]["spec"]["authorization"]["acls"]
                 if "Read" in a["operations"]}
        assert not reads

    def test_postgres_cluster_and_migration_job(self, rendered: tuple[str, list[Obj]]) -> None:
        overlay, objects = rendered
        cluster = _one(objects, "Cluster", "kp-postgres")
        job = _one(objects, "Job", "kp-migrate")
        assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "migrate"
        if overlay == "production":
            assert cluster["spec"]["instances"] == 3
            assert cluster["spec"]["backup"]["barmanObjectStore"]["destinationPath"].startswith("s3://")
            assert _one(objects, "ScheduledBackup", "kp-postgres-nightly")["spec"]["cluster"]["name"] == "kp-postgres"
        else:
            assert cluster["spec"]["instances"] == 1

    def test_publisher_ingress_has_tls(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        ingress = _one(objects, "Ingress", "publisher")
        tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
        assert {r["host"] for r in ingress["spec"]["rules"]} <= tls_hosts

    def test_prometheus_rule_equals_the_rule_file(self, rendered: tuple[str, list[Obj]]) -> None:
        _, objects = rendered
        rule = _one(objects, "PrometheusRule", "kommunal-pulse")
        assert rule["spec"]["groups"] == load_rule_groups()


def test_prometheus_rule_resource_is_the_synced_file() -> None:
    """`python deploy/prometheus/sync_k8s_rule.py` regenerates the PrometheusRule; it must be in sync."""
    doc = yaml.safe_load((K8S / "base" / "monitoring" / "prometheusrule.yaml").read_text())
    assert doc["spec"]["groups"] == load_rule_groups()
