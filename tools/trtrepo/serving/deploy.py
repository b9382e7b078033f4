"""Kubernetes manifests for Triton replicas that read one model repository from object storage.

Plain manifests (Deployment, Service, HorizontalPodAutoscaler) and a KServe InferenceService alternative, built as
data and written as YAML. The servers start as `trtrepo serve` starts them: explicit model control with every
model loaded, and the safe-serving defaults (model repository, shared-memory, trace and logging APIs
behind a key), the key and the store's credentials read from Secrets that the user creates, never written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trtrepo.serving.access import RESTRICTED_APIS, ServerOptions


#: The Triton release the repositories are built for (trtrepo.engines.tensorrt.TARGET_TRITON).
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
#: Triton's per-model queue time, averaged per pod by a Prometheus adapter rule (README): what the autoscaler
#: holds at its target. Queue time grows before latency does, and only when the replicas are short.
QUEUE_METRIC = "avg_time_queue_us"
KEY_ENV = "TRITON_API_KEY"


@dataclass(frozen=True)
class Deployment:
    """What the manifests describe."""

    name: str
    repository: str
    replicas: int
    gpus_per_replica: int = 0
    image: str = DEFAULT_IMAGE
    namespace: str = "default"
    max_replicas: int = 0  # 0: 4x replicas
    queue_target_us: int = 50_000

    @property
    def key_secret(self) -> str:
        return f"{self.name}-api-key"

    @property
    def storage_secret(self) -> str:
        return f"{self.name}-storage"


def server_args(deployment: Deployment) -> list[str]:
    """tritonserver's arguments: all addresses (the pod network; the Service decides who reaches them), the
    restricted APIs behind the key from the Secret (Kubernetes expands $(TRITON_API_KEY) from the env)."""
    options = ServerOptions("0.0.0.0", RESTRICTED_APIS, f"$({KEY_ENV})")
    return [
        f"--model-repository={deployment.repository}",
        "--model-control-mode=explicit",
        "--load-model=*",
        *options.server_flags(),
        *(f"--{name}-port={port}" for name, port in PORTS.items()),
    ]


def _container(deployment: Deployment) -> dict:
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    resources: dict = {"requests": {"cpu": "2", "memory": "4Gi"}}
    if deployment.gpus_per_replica:
        resources["limits"] = {"nvidia.com/gpu": deployment.gpus_per_replica}
    return {
        "name": "tritonserver",
        "image": deployment.image,
        "command": ["tritonserver"],
        "args": server_args(deployment),
        "ports": [{"name": name, "containerPort": port} for name, port in PORTS.items()],
        "env": [{"name": KEY_ENV, "valueFrom": {"secretKeyRef": {"name": deployment.key_secret, "key": "api-key"}}}],
        # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (or GCS/Azure's variables) for the store.
        "envFrom": [{"secretRef": {"name": deployment.storage_secret, "optional": True}}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        # Loading every model from object storage takes a while: liveness waits for the first ready.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 60},
        "resources": resources,
    }


def manifests(deployment: Deployment) -> list[dict]:
    """Deployment, Service and HorizontalPodAutoscaler (autoscaling/v2) for the replicas."""
    labels = {"app.kubernetes.io/name": deployment.name, "app.kubernetes.io/component": "tritonserver"}
    metadata = {"name": deployment.name, "namespace": deployment.namespace, "labels": labels}
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"]), "prometheus.io/path": "/metrics"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": deployment.replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, "annotations": scrape},
                    "spec": {"containers": [_container(deployment)]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {"selector": labels,
                     "ports": [{"name": name, "port": port, "targetPort": name} for name, port in PORTS.items()]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.name},
                "minReplicas": deployment.replicas,
                "maxReplicas": deployment.max_replicas or 4 * deployment.replicas,
                "metrics": [{"type": "Pods", "pods": {
                    "metric": {"name": QUEUE_METRIC},
                    "target": {"type": "AverageValue", "averageValue": str(deployment.queue_target_us)}}}],
            },
        },
    ]


def inference_service(deployment: Deployment) -> dict:
    """The KServe alternative: an InferenceService whose Triton predictor reads the same repository."""
    container = _container(deployment)
    tag = deployment.image.rpartition(":")[2]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": deployment.name, "namespace": deployment.namespace,
                     "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"}},
        "spec": {"predictor": {
            "minReplicas": deployment.replicas,
            "maxReplicas": deployment.max_replicas or 4 * deployment.replicas,
            "triton": {
                "storageUri": deployment.repository,
                "runtimeVersion": tag,
                # KServe mounts the downloaded repository at /mnt/models and sets the ports itself.
                "args": [arg for arg in server_args(deployment)
                         if not arg.startswith(("--model-repository=", "--http-port", "--grpc-port"))],
                "env": container["env"],
                "resources": container["resources"],
            },
        }},
    }


def write(deployment: Deployment, output: Path) -> list[Path]:
    """kubernetes.yaml (the plain manifests) and kserve.yaml in ``output``."""
    import yaml

    output.mkdir(parents=True, exist_ok=True)
    plain, kserve = output / "kubernetes.yaml", output / "kserve.yaml"
    plain.write_text(yaml.safe_dump_all(manifests(deployment), sort_keys=False))
    kserve.write_text(yaml.safe_dump(inference_service(deployment), sort_keys=False))
    return [plain, kserve]
