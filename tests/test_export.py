"""PyTorch -> ONNX export: dynamic batch axis, checker, parity with PyTorch."""

from __future__ import annotations

import onnx

from conftest import trtrepo
from trtrepo.build.export import PARITY_TOLERANCE, export_onnx
from trtrepo.engines import get_engine
from trtrepo.models import get_model


def test_export_has_dynamic_batch_and_matches_pytorch(tmp_path):
    spec = get_model("resnet50")
    report = export_onnx(spec, spec.build_network("random"), tmp_path / "r50.onnx")
    assert report.max_abs_diff < PARITY_TOLERANCE
    graph = onnx.load(str(report.path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # The batch axis really is dynamic: ONNX Runtime runs batch 3 though the export traced batch 2.
    run = get_engine("onnxruntime").load(spec, report.path, "fp32", "cpu", threads=1)
    assert run(spec.example_batch(3))["logits"].shape == (3, 1000)


def test_export_command_reports_parity(tmp_path):
    result = trtrepo("export", "resnet50", "--weights", "random", "--output", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert "max abs diff" in result.stdout and (tmp_path / "m.onnx").stat().st_size > 90e6


def test_export_unknown_model_is_one_line(tmp_path):
    result = trtrepo("export", "resnet5", "--output", str(tmp_path / "m.onnx"))
    assert result.returncode == 2
    from trtrepo.models import MODELS

    assert result.stderr.strip() == (f"error: unknown model 'resnet5'; known: {', '.join(sorted(MODELS))}; or declare it "
                                     "in the plan ([[model]])")
