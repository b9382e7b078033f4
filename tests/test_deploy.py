"""Kubernetes manifests: validated offline against the Kubernetes schemas of two releases (kubernetes-validate);
the KServe InferenceService, a custom resource those schemas lack, checked field by field."""

from __future__ import annotations

import pytest
import yaml

from conftest import trtrepo
from trtrepo.serving.deploy import KEY_ENV, QUEUE_METRIC, Deployment, inference_service, manifests

#: Two Kubernetes releases a cluster may run (kubernetes-validate ships their schemas).
KUBERNETES = ("1.30.0", "1.37.0")
URL = "s3://models/prod"


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("gpus", [0, 1])
def test_manifests_validate_against_the_kubernetes_schemas(version, gpus):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="a test dependency: run make install")
    for document in manifests(Deployment("triton", URL, 2, gpus)):
        kubernetes_validate.validate(document, version, strict=True)  # raises on any unknown or mistyped field


def test_pods_serve_as_trtrepo_serve_does():
    deployment, service, autoscaler = manifests(Deployment("triton", URL, 2, 1, max_replicas=6))
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert f"--model-repository={URL}" in args and "--model-control-mode=explicit" in args
    restricted = [arg for arg in args if arg.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))]
    assert len(restricted) == 2 and all(arg.endswith(f"=$({KEY_ENV})") and "model-repository" in arg for arg in restricted)
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "triton-api-key", "key": "api-key"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert [p["port"] for p in service["spec"]["ports"]] == [8000, 8001, 8002]
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (2, 6)
    assert autoscaler["spec"]["metrics"][0]["pods"]["metric"]["name"] == QUEUE_METRIC
    cpu_only = manifests(Deployment("triton", URL, 2, 0))[0]["spec"]["template"]["spec"]["containers"][0]
    assert "limits" not in cpu_only["resources"]


def test_the_kserve_alternative_reads_the_same_repository():
    service = inference_service(Deployment("triton", URL, 3, 1))
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = service["spec"]["predictor"]
    triton = predictor["triton"]
    assert triton["storageUri"] == URL and triton["runtimeVersion"] == "24.10-py3" and predictor["minReplicas"] == 3
    assert not any(arg.startswith(("--model-repository", "--http-port")) for arg in triton["args"])
    assert any(arg.startswith("--http-restricted-api=") for arg in triton["args"])


def test_deploy_k8s_reads_gpu_needs_from_the_stored_configs(s3, tmp_path):
    import boto3

    gpu = 'name: "m"\nbackend: "python"\ninstance_group { kind: KIND_GPU count: 1 }\n'
    boto3.client("s3", endpoint_url=s3).put_object(Bucket="models", Key="prod/m/config.pbtxt", Body=gpu.encode())
    result = trtrepo("deploy", "k8s", "--repository", f"s3://{s3}/models/prod", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "(2 replicas, 1 GPU each)" in result.stdout and "create secret generic triton-api-key" in result.stdout
    documents = list(yaml.safe_load_all((tmp_path / "kubernetes.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert yaml.safe_load((tmp_path / "kserve.yaml").read_text())["kind"] == "InferenceService"


def test_deploy_k8s_refuses_a_local_folder_in_one_line(tmp_path):
    result = trtrepo("deploy", "k8s", "--repository", "model_repository", "--output", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "trtrepo push DIR s3://" in result.stderr
    assert not (tmp_path / "kubernetes.yaml").exists()
