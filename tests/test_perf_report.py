"""Sweep reports: Table-4-shaped markdown with ratios to the PyTorch baseline, CSV round trip, plot."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from trtrepo.errors import UserError
from trtrepo.perf.analyzer import PerfPoint, cuda_shared_memory, pooled
from trtrepo.perf.bench import BenchRow, compare_outputs, markdown
from trtrepo.perf.bench import write_report as write_bench_report
from trtrepo.perf.gpu_monitor import triton_gpu_memory_mb, triton_gpu_utilization
from trtrepo.perf.sweep import markdown_table, planned_points, read_csv, write_report


def point(variant: str, instances: int, throughput: float) -> PerfPoint:
    return PerfPoint(variant, instances, 4, 1, throughput, 10.0, 12.0, 15.0, 1.0, 8.0)


POINTS = [
    point("resnet50_pytorch_fp32", 1, 10.0),
    point("resnet50_onnxruntime_fp32", 1, 19.0),
    point("resnet50_pytorch_fp32", 2, 12.5),
    point("resnet50_onnxruntime_fp32", 2, 25.0),
    point("yolov3_tiny_onnxruntime_fp32", 1, 40.0),
]


def test_table_has_one_section_per_model_and_ratios_to_its_baseline():
    table = markdown_table(POINTS)
    assert "## resnet50" in table and "## yolov3_tiny" in table
    rows = [line for line in table.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert rows[0].endswith("| 1.90x |") and rows[1].endswith("| 2.00x |")
    assert "No baseline (yolov3_tiny_pytorch_fp32) measured" in table


def test_table_rows_go_by_concurrency_then_instances_whatever_the_order_measured():
    gathered = [replace(point("resnet50_pytorch_fp32", n, 10.0), concurrency=c) for n, c in ((4, 8), (1, 32), (1, 8), (2, 8))]
    rows = [line.split(" | ")[:2] for line in markdown_table(gathered).splitlines() if line[:3] in ("| 1", "| 2", "| 4")]
    assert rows == [["| 1", "8"], ["| 2", "8"], ["| 4", "8"], ["| 1", "32"]]


def test_report_files_round_trip(tmp_path):
    files = write_report(POINTS, tmp_path)
    assert read_csv(files["csv"]) == POINTS
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1.90x" in files["markdown"].read_text()


def test_bench_table_shows_served_share_and_baseline_ratio():
    rows = [BenchRow("resnet50_pytorch_fp32", 4, 20.0, 10.0), BenchRow("resnet50_onnxruntime_fp32", 4, 40.0, 30.0)]
    table = markdown(rows)
    assert "| resnet50_onnxruntime_fp32 | 4 | 40.0 | 30.0 | 75% | 3.00x |" in table
    assert "| resnet50_pytorch_fp32 | 4 | 20.0 | 10.0 | 50% | 1.00x |" in table


def test_sweep_reports_gather_runs_and_replace_what_is_measured_again(tmp_path):
    write_report(POINTS, tmp_path)
    again = [point("resnet50_pytorch_fp32", 2, 13.0), point("resnet50_pytorch_fp32", 4, 14.0)]
    write_report(again, tmp_path)
    gathered = {(p.variant, p.instances): p.throughput for p in read_csv(tmp_path / "sweep.csv")}
    assert gathered[("resnet50_pytorch_fp32", 2)] == 13.0  # replaced
    assert gathered[("resnet50_pytorch_fp32", 1)] == 10.0  # kept from the first run
    assert gathered[("resnet50_pytorch_fp32", 4)] == 14.0  # added
    assert len(gathered) == len(POINTS) + 1


def test_gpu_utilisation_shows_in_the_table_and_survives_the_csv(tmp_path):
    measured = [replace(p, gpu_util_pct=87.5) for p in POINTS[:2]]
    assert "(15, 88%)" in markdown_table(measured) and "GPU %" in markdown_table(measured)
    write_report(POINTS[:2], tmp_path / "cpu")
    assert [p.gpu_util_pct for p in read_csv(tmp_path / "cpu" / "sweep.csv")] == [None, None]
    write_report(measured, tmp_path / "gpu")
    assert [p.gpu_util_pct for p in read_csv(tmp_path / "gpu" / "sweep.csv")] == [87.5, 87.5]


def test_bench_reports_gather_runs(tmp_path):
    write_bench_report([BenchRow("resnet50_pytorch_fp32", 8, 10.0, 9.0)], tmp_path)
    write_bench_report([BenchRow("resnet50_pytorch_fp16", 8, 20.0, 18.0)], tmp_path)
    text = (tmp_path / "bench.md").read_text()
    assert "resnet50_pytorch_fp32" in text and "| 90% | 2.00x |" in text


def test_bench_report_shows_compiled_builds_beside_their_measured_load(tmp_path):
    repo = tmp_path / "repo"
    (repo / "resnet50_inductor_fp16" / "1").mkdir(parents=True)
    (repo / "resnet50_inductor_fp16" / "1" / "inductor.cache").write_bytes(b"x" * 2_000_000)
    record = {"gpu": "NVIDIA H200", "compile_mode": "default", "freezing": True,
              "compile_seconds": {"128": 15.5, "256": 12.5}}
    (repo / "resnet50_inductor_fp16" / "manifest.json").write_text(json.dumps({"engine_build": record}))
    rows = [BenchRow("resnet50_inductor_fp16", 256, 30.0, 29.0, 26.6), BenchRow("resnet50_pytorch_fp32", 256, 7.5, 7.3)]
    write_bench_report(rows, tmp_path / "out", repo)
    text = (tmp_path / "out" / "bench.md").read_text()
    assert "| resnet50_inductor_fp16 | NVIDIA H200 | default, freezing | 128: 15.5, 256: 12.5 | 28.0 | 26.6 | 2.0 |" in text
    assert "| resnet50_pytorch_fp32 | NVIDIA" not in text  # eager variants have no build to report


def test_triton_gpu_utilisation_is_read_from_its_gauge():
    scrape = 'nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5\nnv_gpu_utilization{gpu_uuid="GPU-b"} 1\nnv_inference_count 3\n'
    assert triton_gpu_utilization(scrape) == 75.0
    assert triton_gpu_utilization("nv_inference_count 3\n") is None


def test_gpu_memory_in_use_is_summed_over_the_servers_gpus():
    scrape = ('nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 1048576\nnv_gpu_memory_used_bytes{gpu_uuid="GPU-b"} 2097152\n'
              'nv_gpu_memory_total_bytes{gpu_uuid="GPU-a"} 8.0e+10\n')
    assert triton_gpu_memory_mb(scrape) == 3.0
    assert triton_gpu_memory_mb("nv_inference_count 3\n") is None


def test_cuda_shared_memory_is_sized_for_the_largest_output():
    assert cuda_shared_memory("resnet50_pytorch_fp16", 4)[-1] == str(4 * 1000 * 4)
    # CTPN's outputs vary with the image: sized at the typical input (720x960, features at stride 16, 10 anchors)
    assert cuda_shared_memory("ctpn_pytorch_fp32", 1)[-1] == str(45 * 60 * 10 * 2 * 4)
    assert cuda_shared_memory("ctpn_split", 1) == []  # an ensemble: no spec of its own


def test_a_csv_that_is_not_a_sweep_is_a_one_line_error(tmp_path):
    bad = tmp_path / "sweep.csv"
    bad.write_text("variant,instances\nresnet50_pytorch_fp32,two\n")
    with pytest.raises(UserError, match="not a sweep CSV written by trtrepo"):
        read_csv(bad)


def test_servers_measured_at_once_pool_into_one_point():
    fast = replace(point("resnet50_onnxruntime_fp32", 1, 30.0), concurrency=2, queue_ms=1.0, gpu_util_pct=80.0)
    slow = replace(point("resnet50_onnxruntime_fp32", 1, 10.0), concurrency=1, p99_ms=40.0, queue_ms=5.0, gpu_util_pct=None)
    both = pooled([fast, slow], 3)
    assert (both.servers, both.concurrency, both.throughput) == (2, 3, 40.0)
    assert both.p99_ms == 40.0  # the worst server's: an upper bound of the pooled p99
    assert both.queue_ms == pytest.approx((30 * 1.0 + 10 * 5.0) / 40)  # weighted by what each server did
    assert both.gpu_util_pct == 80.0


def test_server_counts_extend_the_table_and_the_csv(tmp_path):
    one = point("resnet50_onnxruntime_fp32", 1, 20.0)
    two = replace(one, servers=2, throughput=36.0)
    files = write_report([one, two], tmp_path)
    table = files["markdown"].read_text()
    assert "| servers | instances | concurrency |" in table
    assert "| 1 | 1 | 4 | 20 (15) |" in table and "| 2 | 1 | 4 | 36 (15) |" in table
    assert read_csv(files["csv"]) == [one, two]  # one point per server count, none replacing the other


def test_a_concurrency_below_the_server_count_is_not_planned():
    assert planned_points([1, 2], [1, 4]) == [(1, 1), (1, 4), (2, 4)]


def test_bench_compares_every_engine_with_tensorflow_and_pytorch_as_the_studys_table_2():
    from trtrepo.perf.bench import frameworks_markdown

    rows = [BenchRow("resnet50_tensorflow_fp32", 4, 10.0, 8.0), BenchRow("resnet50_pytorch_fp32", 4, 20.0, 16.0),
            BenchRow("resnet50_onnxruntime_fp32", 8, 40.0, 24.0), BenchRow("ctpn_onnxruntime_fp32", 1, 2.0, 1.0)]
    table = frameworks_markdown(rows)
    assert "### resnet50" in table and "### ctpn" not in table  # no framework variant of CTPN measured
    assert "| variant | batch | ms per batch in process | ms per batch served | over TensorFlow in process |" in table
    assert "| resnet50_onnxruntime_fp32 | 8 | 200.0 | 333.3 | 4.00x | 3.00x | 2.00x | 1.50x |" in table
    assert "| resnet50_tensorflow_fp32 | 4 | 400.0 | 500.0 | 1.00x | 1.00x | 0.50x | 0.50x |" in table
    assert frameworks_markdown(rows[3:]) == ""


def test_tfserving_points_belong_to_their_model_and_get_a_ratio_to_its_baseline():
    points = [point("resnet50_pytorch_fp32", 1, 10.0), point("resnet50_tensorflow_fp32@tfserving", 1, 5.0)]
    table = markdown_table(points)
    assert "## resnet50" in table and "resnet50_tensorflow_fp32@tfserving / baseline" in table
    assert table.count("## ") == 1 and "| 0.50x |" in table
    assert "@tfserving is that SavedModel on TF-Serving" in table


def test_tfserving_command_line_names_the_service_and_the_shapes_of_variable_inputs():
    from trtrepo.perf.analyzer import tfserving_arguments

    assert tfserving_arguments("resnet50_tensorflow_fp32") == ["--service-kind", "tfserving"]
    assert tfserving_arguments("ctpn_tensorflow_fp32") == ["--service-kind", "tfserving", "--shape", "input:3,720,960"]


def test_served_outputs_that_arrive_empty_reshaped_or_changed_are_each_named():
    expected = {"logits": np.array([[1.0, -4.0]], np.float32), "boxes": np.ones((1, 3, 4), np.float32)}
    assert compare_outputs(expected, {"logits": np.array([[1.001, -4.0]]), "boxes": np.ones((1, 3, 4))}) == "same"
    found = compare_outputs(expected, {"logits": np.zeros((0,), np.float32), "boxes": np.ones((1, 4, 3))})
    assert found == "logits empty; boxes shape (1, 4, 3) (in process (1, 3, 4))"
    assert compare_outputs(expected, {"logits": np.array([[1.0, -3.0]]), "boxes": np.ones((1, 3, 4))}) == \
        "logits differs by 2.5e-01 of its largest value"
    assert compare_outputs({"lines": np.zeros((1, 0, 4))}, {"lines": np.zeros((1, 0, 4))}) == "same"


def test_bench_table_says_whether_the_server_answered_as_the_engine():
    table = markdown([BenchRow("resnet50_pytorch_fp32", 4, 20.0, 10.0, 1.0, "logits empty")])
    assert "| 1.0 | logits empty |" in table


def test_latency_panels_label_their_ticks_in_short_plain_numbers():
    from trtrepo.plots import pyplot, readable_log_axes, short_number

    assert [short_number(v) for v in (0.5, 850, 1200, 28000, 21500)] == ["0.5", "850", "1.2k", "28k", "21.5k"]
    figure, axes = pyplot().subplots()
    axes.plot([21000, 29000], [300, 400])
    axes.set(xscale="log", yscale="log")
    readable_log_axes(axes)
    figure.canvas.draw()
    x_labels = [t.get_text() for t in axes.xaxis.get_ticklabels(minor=True) if t.get_text()]
    assert x_labels and all("\\times" not in label and label.endswith("k") for label in x_labels)
    pyplot().close(figure)
