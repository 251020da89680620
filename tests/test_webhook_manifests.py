"""The webhook's manifests: valid against the Kubernetes 1.36 schemas offline, and consistent with each other
and with the code (names, ports, paths, selectors, security)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from guardgrid import keys

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "manifests" / "base"
CERT_MANAGER = ROOT / "manifests" / "cert-manager"
WEBHOOK_FILES = sorted(BASE.glob("webhook-*.yaml"))
SCHEMA_VERSION = "1.36.0"
NAMESPACE = "guardgrid-system"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def only(path: Path, kind: str) -> dict[str, Any]:
    found = [doc for doc in documents(path) if doc["kind"] == kind]
    assert len(found) == 1, (path, kind)
    return found[0]


DEPLOYMENT = only(BASE / "webhook-deployment.yaml", "Deployment")
SERVICE = only(BASE / "webhook-service.yaml", "Service")
PDB = only(BASE / "webhook-pdb.yaml", "PodDisruptionBudget")
CONFIG = only(BASE / "webhook-mutatingwebhookconfiguration.yaml", "MutatingWebhookConfiguration")
POD = DEPLOYMENT["spec"]["template"]
CONTAINER = POD["spec"]["containers"][0]


def test_the_webhook_has_its_expected_manifest_files() -> None:
    assert [path.name for path in WEBHOOK_FILES] == [
        "webhook-deployment.yaml", "webhook-mutatingwebhookconfiguration.yaml", "webhook-pdb.yaml",
        "webhook-rbac.yaml", "webhook-service.yaml"]


@pytest.mark.parametrize("path", WEBHOOK_FILES, ids=lambda path: path.name)
def test_every_webhook_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
        if doc["kind"] != "MutatingWebhookConfiguration":
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_the_webhook_configuration_is_fail_open_idempotent_v1_and_scoped_to_pod_create() -> None:
    [hook] = CONFIG["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert (hook["sideEffects"], hook["failurePolicy"], hook["timeoutSeconds"]) == ("None", "Ignore", 5)
    assert (hook["reinvocationPolicy"], hook["matchPolicy"]) == ("IfNeeded", "Equivalent")
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]


def test_the_webhook_configuration_selects_opted_in_namespaces_but_never_system_ones() -> None:
    [hook] = CONFIG["webhooks"]
    expressions = {e["key"]: e for e in hook["namespaceSelector"]["matchExpressions"]}
    assert expressions[keys.INJECT] == {"key": keys.INJECT, "operator": "In", "values": [keys.NAMESPACE_OPT_IN_VALUE]}
    excluded = expressions["kubernetes.io/metadata.name"]
    assert excluded["operator"] == "NotIn" and set(excluded["values"]) == {"kube-system", NAMESPACE}
    objects = {e["key"]: e for e in hook["objectSelector"]["matchExpressions"]}
    assert objects[keys.STANDBY_FOR]["operator"] == "DoesNotExist"
    assert objects[keys.INJECT] == {"key": keys.INJECT, "operator": "NotIn", "values": ["false"]}


def test_the_webhook_configuration_calls_the_service_on_its_https_port_at_mutate() -> None:
    [hook] = CONFIG["webhooks"]
    target = hook["clientConfig"]["service"]
    assert (target["name"], target["namespace"], target["path"]) == (SERVICE["metadata"]["name"], NAMESPACE, "/mutate")
    [port] = SERVICE["spec"]["ports"]
    assert port["port"] == target["port"] == 443
    named = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert named[port["targetPort"]] == 8443


def test_service_and_pdb_select_the_deployments_pods() -> None:
    labels = POD["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert SERVICE["spec"]["selector"].items() <= labels.items()
    assert PDB["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert DEPLOYMENT["spec"]["replicas"] == 2 and PDB["spec"]["minAvailable"] == 1


def test_the_deployment_runs_the_documented_command_with_tls_from_the_mounted_secret() -> None:
    assert CONTAINER["image"] == "ghcr.io/guardgrid/guardgrid:0.1.0"
    assert CONTAINER["command"] == ["gunicorn", "-c", "webhook/gunicorn_conf.py", "webhook.app:create_app()"]
    assert (ROOT / "webhook" / "gunicorn_conf.py").is_file()
    env = {e["name"]: e.get("value") for e in CONTAINER["env"]}
    mounts = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    assert env["GUARDGRID_TLS_CERT_FILE"] == mounts["tls"] + "/tls.crt"
    assert env["GUARDGRID_TLS_KEY_FILE"] == mounts["tls"] + "/tls.key"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith(mounts["tmp"] + "/")
    volumes = {v["name"]: v for v in POD["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "guardgrid-webhook-tls"
    for probe in ("readinessProbe", "livenessProbe"):
        assert CONTAINER[probe]["httpGet"] == {"scheme": "HTTPS", "path": "/healthz", "port": "https"}


def test_the_deployment_is_non_root_read_only_least_privilege_and_has_requests() -> None:
    spec = POD["spec"]
    assert spec["serviceAccountName"] == "guardgrid-webhook" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    context = CONTAINER["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]} and context["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"cpu", "memory"} <= CONTAINER["resources"]["requests"].keys()
    assert CONTAINER["resources"]["limits"]["memory"] == CONTAINER["resources"]["requests"]["memory"]


def test_the_webhook_identity_has_no_api_permissions_at_all() -> None:
    docs = documents(BASE / "webhook-rbac.yaml")
    assert [doc["kind"] for doc in docs] == ["ServiceAccount"]
    assert docs[0]["metadata"]["name"] == "guardgrid-webhook" and docs[0]["automountServiceAccountToken"] is False


def test_the_base_kustomization_lists_every_webhook_manifest() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert {path.name for path in WEBHOOK_FILES} <= listed


def test_the_cert_manager_component_issues_the_secret_the_deployment_mounts_and_injects_its_ca() -> None:
    component = yaml.safe_load((CERT_MANAGER / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    for entry in component["resources"] + [patch["path"] for patch in component["patches"]]:
        assert (CERT_MANAGER / entry).is_file(), entry
    certificates = {doc["metadata"]["name"]: doc for doc in documents(CERT_MANAGER / "webhook-certificate.yaml")
                    if doc["kind"] == "Certificate"}
    serving = certificates["guardgrid-webhook-tls"]
    assert serving["spec"]["secretName"] == POD["spec"]["volumes"][0]["secret"]["secretName"]
    assert "guardgrid-webhook.guardgrid-system.svc" in serving["spec"]["dnsNames"]
    issuer = serving["spec"]["issuerRef"]["name"]
    assert certificates["guardgrid-webhook-ca"]["spec"]["isCA"] is True
    issuers = {doc["metadata"]["name"]: doc for doc in documents(CERT_MANAGER / "webhook-certificate.yaml")
               if doc["kind"] == "Issuer"}
    assert issuers[issuer]["spec"]["ca"]["secretName"] == certificates["guardgrid-webhook-ca"]["spec"]["secretName"]
    patch = yaml.safe_load((CERT_MANAGER / "webhook-cainjection-patch.yaml").read_text())
    assert patch["metadata"]["name"] == CONFIG["metadata"]["name"]
    assert patch["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/guardgrid-webhook-tls"
