"""Commands that serve: serve (one server or replicas behind nginx), push, deploy k8s."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from trtrepo.cli.app import ModelControl, MpsOption, REPOSITORY, app, say
from trtrepo.engines.tensorrt import TARGET_TENSORRT, installed_tensorrt
from trtrepo.errors import UserError
from trtrepo.perf.progress import console
from trtrepo.serving.objectstore import is_remote, repository_uses_gpus

if TYPE_CHECKING:
    from trtrepo.serving.access import ServerOptions
    from trtrepo.serving.server import Ports


@app.command()
def push(
    repository: Annotated[Path, typer.Argument(help="Local model repository folder.")],
    destination: Annotated[str, typer.Argument(
        help="s3://bucket/prefix, or s3://http://HOST:PORT/bucket/prefix for an S3-compatible store.")],
    endpoint_url: Annotated[Optional[str], typer.Option(
        help="Endpoint of an S3-compatible store (MinIO, Ceph, moto), e.g. http://127.0.0.1:9000.")] = None,
) -> None:
    """Upload a model repository to S3 or an S3-compatible store, for servers that read it from there: only files
    whose SHA-256 changed since the last push; files the repository no longer holds are deleted. The repository
    is validated first. Credentials and region come from the AWS_* environment variables, as Triton reads them."""
    from trtrepo.format.validate import validate_repository
    from trtrepo.serving.objectstore import S3Location, push as push_repository

    problems = validate_repository(repository, installed_tensorrt() or TARGET_TENSORRT)
    if problems:
        raise UserError(f"not pushed: {problems[0]}" + (f" (and {len(problems) - 1} more: trtrepo validate)" if problems[1:] else ""))
    location = S3Location.parse(destination, endpoint_url)
    report = push_repository(repository, location, lambda message: console.print(f"  {message}", markup=False))
    print(f"{location.triton_url}: {report.line()}")
    print(f"serve it: trtrepo serve --model-repository {location.triton_url}")


deploy_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                         help="Deployment manifests for servers that read a model repository from object storage.")
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("k8s")
def deploy_k8s(
    repository: Annotated[str, typer.Option(
        help="Where the pods read the repository: s3://bucket/prefix (or gs://, as://), as `trtrepo push` printed it.")],
    replicas: Annotated[int, typer.Option(min=1, help="Servers to start with (the autoscaler's minimum).")] = 2,
    max_replicas: Annotated[Optional[int], typer.Option(min=1, help="The autoscaler's maximum (default 4x replicas).")] = None,
    gpus_per_replica: Annotated[Optional[int], typer.Option(
        min=0, help="nvidia.com/gpu per pod. Default: 1 where any model's instances are GPU ones (read from the "
                    "repository's configs), else 0.")] = None,
    queue_target_us: Annotated[int, typer.Option(
        min=1, help="Average queue time per pod the autoscaler holds (Triton's metric, through a Prometheus adapter).")] = 50_000,
    name: Annotated[str, typer.Option(help="Name of the Deployment, Service, autoscaler and InferenceService.")] = "triton",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    image: Annotated[str, typer.Option(help="Triton image (the release the plans were built for).")] = "nvcr.io/nvidia/tritonserver:24.10-py3",
    output: Annotated[Path, typer.Option(help="Folder for kubernetes.yaml and kserve.yaml.")] = Path("deploy/k8s"),
) -> None:
    """Write Kubernetes manifests for Triton replicas serving one repository from object storage: a Deployment
    (readiness, liveness and startup probes on Triton's health endpoints, the restricted APIs behind a key from a
    Secret, Prometheus scrape annotations, GPU requests for GPU models), a Service and a HorizontalPodAutoscaler on
    queue time; and a KServe InferenceService as the alternative. Prints the kubectl commands that apply them."""
    import re

    from trtrepo.serving.deploy import Deployment, write

    if not is_remote(repository):
        raise UserError(f"{repository}: pods read the repository from object storage (s3://, gs://, as://); "
                        "push it there first: trtrepo push DIR s3://bucket/prefix")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?", name):
        raise UserError(f"--name {name!r}: Kubernetes names are lower-case letters, digits and '-'")
    if gpus_per_replica is None:
        gpus_per_replica = 1 if repository_uses_gpus(repository) else 0
    deployment = Deployment(name, repository, replicas, gpus_per_replica, image, namespace, max_replicas or 0, queue_target_us)
    files = write(deployment, output)
    print(f"wrote {', '.join(map(str, files))} ({replicas} replicas, {gpus_per_replica} GPU each)")
    print(f"kubectl -n {namespace} create secret generic {deployment.key_secret} --from-literal=api-key=$(openssl rand -hex 32)")
    print(f"kubectl -n {namespace} create secret generic {deployment.storage_secret} "
          "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... --from-literal=AWS_DEFAULT_REGION=...")
    print(f"kubectl apply -f {files[0]}     # or, with KServe: kubectl apply -f {files[1]}")


class LogFormat(str, Enum):
    default = "default"
    ISO8601 = "ISO8601"


StoreRepoOption = Annotated[str, typer.Option(
    "--model-repository", "--repo",
    help="Model repository: a folder, or object storage that Triton reads itself (s3://bucket/prefix, "
         "s3://http://HOST:PORT/bucket/prefix for an S3-compatible store, gs://, as://; credentials from the "
         "environment, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).")]


@app.command()
def serve(
    model_repository: StoreRepoOption = str(REPOSITORY),
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback exposes the server beyond "
                                           "this machine (a warning says what).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(min=1, max=65535, help="Prometheus metrics port.")] = 8002,
    api_key: Annotated[Optional[str], typer.Option(
        envvar="TRTREPO_API_KEY", show_envvar=True,
        help="Key for the restricted APIs (model repository, shared memory, trace, logging). "
             "Default: a new random key per start, printed once and written to a file only you can read, "
             "where trtrepo's commands and clients on this machine find it.")] = None,
    unrestricted: Annotated[bool, typer.Option(
        "--unrestricted", help="Open every API to anyone who reaches the server. With the Python backend a model load "
                               "runs code: only on a trusted network.")] = False,
    log_file: Annotated[Optional[str], typer.Option(help="Server log file; - for this process's stdout (for a process "
                                                          "manager). Default: a temporary file.")] = None,
    log_format: Annotated[LogFormat, typer.Option(help="Server log line format.")] = LogFormat.default,
    model_control_mode: Annotated[ModelControl, typer.Option(help="explicit lets `trtrepo perf` reload models.")] = ModelControl.explicit,
    replicas: Annotated[int, typer.Option(
        min=1, help="Servers on the repository behind nginx, which listens on the HTTP and gRPC ports and moves a "
                    "request that meets a failed replica to another; the replicas listen on free loopback ports.")] = 1,
    mps: MpsOption = False,
) -> None:
    """Start tritonserver on the repository, wait until it is ready, serve until Ctrl-C, SIGTERM or SIGHUP.

    Secure by default: listens on 127.0.0.1, and the APIs that load models (code execution with the Python
    backend), map shared memory or set trace and log files need the key; health, metadata, model configs, statistics
    and inference are open, so perf_analyzer and Triton's own clients work without it. HTTP goes through nginx, which
    refuses what would crash this tritonserver (form-encoded bodies over 4 MB) and bounds bodies, headers and slow
    senders. The repository is validated before each start: a model that would not load, or would fail once loaded,
    is left out with one line (explicit model control), so that it takes no other model down. A change to a model
    folder while it serves (`trtrepo config`, a rebuild, a folder added or fixed) is loaded within seconds if it
    validates, else refused with one line, the model serving what it served. A server that dies is
    started again (at most 5 times in 5 minutes); a Python-backend model whose stub dies or stops is reloaded. A signal stops the server and its stubs (a second one kills them at once) and exits
    non-zero."""
    import threading
    from contextlib import nullcontext

    from trtrepo.serving.access import RESTRICTED_APIS, ServerOptions
    from trtrepo.serving.mps import shared_gpu, unshared_note
    from trtrepo.serving.server import Ports, TritonServer

    with shared_gpu(say) if mps else nullcontext():
        if model_repository.startswith("s3://"):  # Triton downloads the store into a folder: keys must stay in it
            from trtrepo.serving.objectstore import S3Location

            S3Location.parse(model_repository).check_keys()
        note = None if mps or is_remote(model_repository) else unshared_note(Path(model_repository))
        if note:
            console.print(f"note: {note}")
        options = ServerOptions(host, () if unrestricted else RESTRICTED_APIS, api_key)
        if replicas > 1:
            serve_replicas(model_repository, replicas, Ports(http_port, grpc_port, metrics_port), options, model_control_mode.value)
            return
        server = TritonServer(model_repository, Ports(http_port, grpc_port, metrics_port), log_file, model_control_mode.value,
                              options=options, log_format=log_format.value, on_event=say, guard=True, leave_out_invalid=True,
                              watch_repository=True)
        if not options.loopback:
            console.print(f"[yellow]warning: listening on {host}: {server.options.exposure()}[/yellow]")
        if unrestricted:
            console.print(f"[red]warning: --unrestricted: {server.options.exposure()}[/red]")
        if installed_tensorrt() and not is_remote(model_repository):  # plans the Python backend would load with it
            from trtrepo.format.validate import tensorrt_problems

            for problem in tensorrt_problems(model_repository, installed_tensorrt()):
                console.print(f"[yellow]warning: {problem}[/yellow]")
        console.print(f"starting tritonserver from {server.installation.source} on {server.repository} ...")
        with server:
            log = "stdout" if server.log_file is None else server.log_file
            print(f"ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}  log {log}")
            models = server.ready_models()
            print(f"serving {len(models)} model{'' if len(models) == 1 else 's'}: {', '.join(models) or 'none'}")
            if server.api_key and not api_key:
                print(f"API key (shown once; trtrepo commands on this machine find it): {server.api_key}")
            print("Ctrl-C stops the server.", flush=True)
            try:
                server.supervise(threading.Event())  # returns only by raising: too many restarts, or a signal
            except KeyboardInterrupt:
                console.print("stopping tritonserver ...")
                raise


def serve_replicas(repository: str, count: int, ports: "Ports", options: "ServerOptions", model_control: str) -> None:
    """`trtrepo serve --replicas N`: N supervised servers behind nginx until Ctrl-C or a signal, or until none is
    left."""
    import time

    from trtrepo.serving.replicas import ReplicaSet

    balanced = ReplicaSet(repository, count, ports, options, model_control, on_event=say)
    console.print(f"starting {count} tritonservers on {repository} behind nginx ({balanced.nginx}) ...")
    with balanced:
        print(f"ready: http {balanced.http_url}  grpc {balanced.grpc_url} (nginx over {count} replicas)")
        for index, server in enumerate(balanced.servers, 1):
            print(f"  replica {index}: http {server.http_url}  metrics {server.metrics_url}  log {server.log_file}")
        if balanced.options.api_key and not options.api_key:
            print(f"API key (shown once; trtrepo commands on this machine find it): {balanced.options.api_key}")
        print("Ctrl-C stops nginx and the servers.", flush=True)
        try:
            while balanced.running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping nginx and tritonservers ...")
            raise
    raise UserError("nginx or every replica stopped; their logs: " + ", ".join(str(s.log_file) for s in balanced.servers))
