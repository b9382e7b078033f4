"""Sweep reports: Table-4-shaped markdown with ratios to the PyTorch baseline, CSV round trip, plot."""

from __future__ import annotations

from trtrepo.perf.analyzer import PerfPoint
from trtrepo.perf.bench import BenchRow, markdown
from trtrepo.perf.sweep import markdown_table, read_csv, write_report


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
