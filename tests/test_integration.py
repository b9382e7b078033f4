"""The real tritonserver on free ports, queried by the real client and measured by the real perf_analyzer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import client_process, resnet_client, trtrepo
from trtrepo.clients.resnet_client import classify, classify_server_side
from trtrepo.errors import UserError
from trtrepo.perf.bench import bench
from trtrepo.perf.sweep import sweep
from trtrepo.serving.access import Endpoint
from trtrepo.serving.client import InferenceClient, triton_client
from trtrepo.serving.server import Ports, TritonServer, free_port

pytestmark = pytest.mark.integration
# EfficientNet-Lite0 (real weights) rather than ResNet50: a tenth of the work per image, so that measurements under
# the other worker's load still see enough requests per window.
MODEL = "efficientnet_lite0"
VARIANTS = [f"{MODEL}_onnxruntime_fp32", f"{MODEL}_pytorch_fp32"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_both_engines_agree_through_triton(server, images, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    paths = sorted(images.iterdir())
    onnx, torch_ = (classify(paths, v, url, protocol, batch_size=2, top_k=5) for v in VARIANTS)
    for a, b in zip(onnx, torch_):
        assert [label for label, _ in a] == [label for label, _ in b]
        assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)
        assert 0 < sum(s for _, s in a) <= 1.0 + 1e-6


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classifier_pipeline_answers_as_the_client_side_path(server, darknet_photos, protocol):
    """Bytes in: the server decodes, resizes, batches and names the top-k exactly as the client does on its side."""
    url = server.http_url if protocol == "http" else server.grpc_url
    photos = sorted(darknet_photos.glob("*.jpg"))
    client_side = classify(photos, VARIANTS[0], url, protocol, batch_size=4, top_k=3)
    server_side = classify_server_side(photos, MODEL, url, protocol, top_k=3)
    assert [[label for label, _ in r] for r in server_side] == [[label for label, _ in r] for r in client_side]
    assert np.allclose([[s for _, s in r] for r in server_side], [[s for _, s in r] for r in client_side], atol=1e-4)
    result = resnet_client("--url", url, "--protocol", protocol, "--server-side", "--model", VARIANTS[0], "--top-k", "1",
                           "--json", str(darknet_photos / "dog.jpg"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["label"] == client_side[[p.name for p in photos].index("dog.jpg")][0][0]
    by_name = resnet_client("--url", url, "--protocol", protocol, "--model", MODEL, "--top-k", "1", "--json",
                            str(darknet_photos / "dog.jpg"))  # the pipeline's own name: bytes sent, no flag needed
    assert by_name.returncode == 0 and json.loads(by_name.stdout) == json.loads(result.stdout), by_name.stderr


def test_server_output_matches_in_process_engine(server, small_repo):
    from trtrepo.engines import get_engine
    from trtrepo.models import get_model

    spec = get_model(MODEL)
    batch = spec.example_batch(3, seed=11)
    served = InferenceClient(VARIANTS[0], url=server.grpc_url, protocol="grpc").infer(batch)["logits"]
    local = get_engine("onnxruntime").load(spec, small_repo / VARIANTS[0] / "1" / "model.onnx", "fp32", "cpu", 1)(batch)
    assert np.allclose(served, local["logits"], atol=1e-4)


def test_client_script_prints_top5_and_json(server, images):
    result = client_process("resnet_client", "--url", server.http_url, "--model", VARIANTS[1], "--batch-size", "8", str(images))
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.startswith("  ")]) == 5 * 3
    result = resnet_client("--url", server.grpc_url, "--protocol", "grpc", "--json", "--top-k", "2", str(images / "noise.jpg"))
    parsed = json.loads(result.stdout)
    assert parsed[0]["image"].endswith("noise.jpg") and len(parsed[0]["top"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet50_tensorrt_int8"], "is not on the server"),
    (["{images}/missing.jpg"], "no such file or folder"),
    (["{images}/../corrupt.jpg"], "not a readable image"),
    (["--server-side", "--model", MODEL, "{images}/../corrupt.jpg"], "not a readable image"),
    (["--server-side", "--model", "yolov3_tiny"], "answers detection, not classification: use clients/yolo_client.py"),
    (["--server-side", "--model", MODEL, "--server-labels"], "exclude each other"),
])
def test_client_errors_are_one_line(server, images, args, message):
    (images.parent / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    args = [a.format(images=images) for a in args]
    if not any(a.endswith(".jpg") for a in args):
        args.append(str(images / "noise.jpg"))
    result = resnet_client("--url", server.http_url, *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_client_reports_server_down(images):
    result = resnet_client("--url", f"localhost:{free_port()}", str(images / "noise.jpg"))
    assert result.returncode == 2 and result.stderr.startswith("error: cannot reach Triton")


def test_perf_sweep_reports_a_point_it_cannot_measure_and_goes_on(server):
    """The model is unloaded after its first point: the second fails, the sweep reports it, then restores the model."""
    variant, failures = VARIANTS[0], []
    triton = triton_client(server.grpc_url, "grpc")
    points = sweep([Endpoint(server.grpc_url)], [variant], [1], [1, 2], batch_size=1, measurement_ms=500,
                   on_point=lambda _: triton.unload_model(variant), on_failure=failures.append)
    assert [(p.instances, p.concurrency) for p in points] == [(1, 1)]
    assert len(failures) == 1 and failures[0].startswith(f"{variant} x1 c2: perf_analyzer on {variant} failed")
    assert triton.is_model_ready(variant)


def test_perf_sweep_reloads_instances_and_restores_config(server):
    points = sweep([Endpoint(server.grpc_url)], VARIANTS, [1, 2], [1], batch_size=1, measurement_ms=500)
    assert [(p.variant, p.instances) for p in points] == [(v, n) for v in VARIANTS for n in (1, 2)]
    assert all(p.throughput > 0 and p.p99_ms >= p.p50_ms > 0 for p in points)
    for variant in VARIANTS:
        config = InferenceClient(variant, url=server.grpc_url, protocol="grpc").config
        assert config.instance_group[0].count == 1


def test_perf_command_writes_table_csv_and_plot_with_the_pipeline_beside_its_variant(server, tmp_path):
    """The pipeline is measured with the shipped photos as perf_analyzer's input data, its ratio to the tensor
    variant it calls in the same table; it runs the instances of its own asked for, and gets its config back."""
    from trtrepo.perf.pipeline_stages import read_counters
    from trtrepo.perf.sweep import read_csv

    metrics = server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    result = trtrepo("perf", "--url", server.grpc_url, "--metrics-url", metrics, "--models", f"{VARIANTS[0]},{MODEL}",
                     "--instances", "1", "--concurrency", "2", "--measurement-ms", "500", "--pipeline-instances", "2",
                     "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "| 1 | 2 |" in result.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"sweep.csv", "sweep.md", "sweep.png", "pipelines.md"}
    stages = (tmp_path / "pipelines.md").read_text()
    assert "Each stage alone, per image: decode" in stages
    assert "its 2 instances'" in stages and "ms per image went to" in stages  # the in-server breakdown, through --url
    # Where the server's metrics are known, the pipeline's own counters say where its executes spent their time.
    counters = read_counters([server.metrics_url], MODEL, VARIANTS[0])
    assert counters["images"] > 0 and counters["prepare"] > 0 and counters["engine"] > 0 and counters["variant"] > 0
    assert counters["read"] == counters["decode"] == 0  # the device path's stages: this one prepares on the host
    points = {p.variant: p for p in read_csv(tmp_path / "sweep.csv")}
    assert points[MODEL].serves == VARIANTS[0] and points[VARIANTS[0]].serves is None
    assert points[MODEL].throughput > 0 and points[MODEL].batch_size == 1
    table = (tmp_path / "sweep.md").read_text()
    share = points[MODEL].throughput / points[VARIANTS[0]].throughput
    assert f"{MODEL} bytes in / {VARIANTS[0]} tensors in" in table and f"| {share:.2f}x |" in table
    assert "one encoded photo per request, in turn from 19 photos, " in table
    assert points[MODEL].pipeline_instances == 2 and "each pipeline running 2 instances of its own" in table
    assert InferenceClient(MODEL, url=server.grpc_url, protocol="grpc").config.instance_group[0].count == 1


def test_perf_sweeps_servers_as_well_as_instances(server, small_repo, tmp_path):
    """Two servers measured at once: a point per server count, instance count and concurrency (one request in
    flight cannot load two servers), and both servers get their configs back."""
    import shutil

    from trtrepo.perf.sweep import read_csv

    shutil.copytree(small_repo / VARIANTS[0], tmp_path / "repo" / VARIANTS[0])
    with TritonServer(tmp_path / "repo", Ports.free(), model_control="explicit") as second:
        urls = [server.grpc_url, second.grpc_url]
        result = trtrepo("perf", "--url", ",".join(urls), "--models", VARIANTS[0], "--instances", "2",
                         "--servers", "1,2", "--concurrency", "1,2", "--measurement-ms", "500", "--output", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
        points = read_csv(tmp_path / "out" / "sweep.csv")
        assert sorted((p.servers, p.instances, p.concurrency) for p in points) == [(1, 2, 1), (1, 2, 2), (2, 2, 2)]
        assert all(p.throughput > 0 for p in points)
        assert "| servers | instances | concurrency |" in result.stdout
        assert "concurrencies below the server count" in result.stderr
        for url in urls:
            assert InferenceClient(VARIANTS[0], url=url, protocol="grpc").config.instance_group[0].count == 1


def test_bench_measures_in_process_and_served(server, small_repo):
    rows = bench(small_repo, server.grpc_url, VARIANTS, batch_size=2, seconds=1)
    assert [r.variant for r in rows] == VARIANTS
    assert all(r.in_process > 0 and r.served > 0 for r in rows)
    assert [r.served_outputs for r in rows] == ["same"] * len(VARIANTS)  # the server answered as the engine does


def test_server_that_cannot_load_a_model_fails_with_the_reason(small_repo, tmp_path):
    import shutil

    broken = tmp_path / "repo"
    shutil.copytree(small_repo / VARIANTS[0], broken / VARIANTS[0])
    (broken / VARIANTS[0] / "1" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(UserError, match="failed to load"):
        TritonServer(broken, Ports.free()).start(timeout_s=120)


@pytest.fixture
def pipelined(server):
    """VARIANTS[1] reloaded as a pipelined (decoupled) model, restored afterwards."""
    from trtrepo.format.config import apply_serving_options, config_to_json, serving_options_of

    client = InferenceClient(VARIANTS[1], url=server.grpc_url, protocol="grpc")
    original = client.model_config(VARIANTS[1])
    changed = client.model_config(VARIANTS[1])
    apply_serving_options(changed, serving_options_of(changed).updated(pipelined=True))
    client.load_model(VARIANTS[1], config_to_json(changed))
    yield VARIANTS[1]
    client.load_model(VARIANTS[1], config_to_json(original))


def test_pipelined_model_answers_streams_in_order(server, pipelined):
    from trtrepo.models import get_model

    client = InferenceClient(pipelined, url=server.grpc_url, protocol="grpc")
    assert client.streaming and client.config.model_transaction_policy.decoupled
    batches = [get_model(MODEL).example_batch(size, seed=size) for size in (1, 3, 2, 4)]
    streamed = client.infer_many(batches)
    assert [r["logits"].shape[0] for r in streamed] == [1, 3, 2, 4]
    assert np.allclose(client.infer(batches[1])["logits"], streamed[1]["logits"], atol=1e-4)
    with pytest.raises(UserError, match="use --protocol grpc"):
        InferenceClient(pipelined, url=server.http_url, protocol="http")
    point = sweep([Endpoint(server.grpc_url)], [pipelined], [1], [2], batch_size=2, measurement_ms=1500)[0]
    assert point.throughput > 0 and point.p99_ms >= point.p50_ms > 0


def test_perf_resume_measures_only_the_missing_points(server, tmp_path):
    """sweep.csv is written point by point; --resume skips what is there (a sweep whose server died goes on)."""
    from trtrepo.perf.sweep import read_csv

    first = trtrepo("perf", "--url", server.grpc_url, "--models", VARIANTS[0], "--instances", "1", "--concurrency", "1",
                    "--measurement-ms", "300", "--output", str(tmp_path))
    assert first.returncode == 0, first.stderr
    measured = read_csv(tmp_path / "sweep.csv")[0]
    resumed = trtrepo("perf", "--url", server.grpc_url, "--models", VARIANTS[0], "--instances", "1", "--concurrency", "1,2",
                      "--measurement-ms", "300", "--output", str(tmp_path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 points" in resumed.stderr and f"{VARIANTS[0]} x1 c1:" not in resumed.stderr
    points = {(p.instances, p.concurrency): p for p in read_csv(tmp_path / "sweep.csv")}
    assert set(points) == {(1, 1), (1, 2)} and points[(1, 1)] == measured


def test_tune_finds_a_clearly_better_config_applies_it_and_plans_capacity(small_repo, tmp_path):
    """The starting config holds every batch back half a second for a fourth request that never comes at
    concurrency 2; brute search over the queue delay finds that 0 is better in every run of both (each measured
    again after the search), --apply writes it (the old config kept) and reloads it, and the capacity plan shows its
    arithmetic."""
    import shutil

    from trtrepo.format.config import read_config
    from trtrepo.perf.tune_report import read_csv

    variant = "efficientnet_lite0_onnxruntime_fp32"
    repository = tmp_path / "repo"
    shutil.copytree(small_repo / variant, repository / variant)
    edited = trtrepo("config", str(repository / variant), "--max-batch-size", "4", "--preferred-batch-sizes", "4",
                     "--max-queue-delay-us", "500000")
    assert edited.returncode == 0, edited.stderr
    with TritonServer(repository, Ports.free(), model_control="explicit") as own:
        result = trtrepo("tune", "--url", own.grpc_url, "--model-repository", str(repository), "--models", variant,
                         "--strategy", "brute", "--instances", "1", "--max-batch-sizes", "4", "--queue-delays-us", "0",
                         "--concurrency", "2", "--measurement-ms", "1000", "--apply", "--target-rate", "100",
                         "--max-p99-ms", "5000", "--output", str(tmp_path / "out"))
        assert result.returncode == 0, result.stderr
        every = read_csv(tmp_path / "out" / "tune.csv")
        assert sorted((p.max_queue_delay_us, p.repeat) for p in every) == [(0, 0), (0, 1), (500000, 0), (500000, 1)]
        assert all(p.status == "measured" and p.throughput_ci is not None for p in every)
        slow, fast = sorted((p for p in every if not p.repeat), key=lambda p: p.throughput)
        assert fast.max_queue_delay_us == 0 and fast.throughput > 2 * slow.throughput
        assert "every run of it beats every run of the start" in result.stdout, result.stdout
        assert f"{variant}: applied to" in result.stdout and "measured again at concurrency 2" in result.stdout
        assert "Run-to-run noise of the objective:" in result.stdout and "server(s) x 1 instance(s)" in result.stdout
        assert read_config(repository / variant / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 0
        kept = read_config(repository / variant / "config.pbtxt.orig")
        assert kept.dynamic_batching.max_queue_delay_microseconds == 500000
        served = InferenceClient(variant, url=own.grpc_url, protocol="grpc").config
        assert served.dynamic_batching.max_queue_delay_microseconds == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"tune.csv", "tune.md", "tune.png"}
