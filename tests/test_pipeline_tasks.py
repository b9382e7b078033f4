"""What each server-side pipeline does per task, in numpy alone (trtrepo.backend.pipeline_tasks), and the configs
that declare it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.backend.pipeline_tasks import ClassifierTask, DetectorTask, TextTask, pipeline_task
from trtrepo.format.config import pipeline_config
from trtrepo.models import get_model
from trtrepo.specs import image_tensor


@pytest.mark.parametrize("model, given, message", [
    ("efficientnet_lite0", {"top_k": np.array([[0]], np.int32)}, "top_k must be one number from 1 to 1000, got [0]"),
    ("yolov3_tiny", {"conf": np.array([[np.nan]], np.float32)}, "conf must be one number from 0 to 1"),
    ("yolov3_tiny", {"iou": np.array([[0.1, 0.2]], np.float32)}, "iou must be one number from 0 to 1, got [0.1"),
    ("ctpn", {"line_score": np.array([[1.5]], np.float32)}, "line_score must be one number from 0 to 1, got [1.5]"),
])
def test_an_option_out_of_range_is_the_requests_own_error(model, given, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline_task(get_model(model)).read_options(given)


def test_options_left_out_take_the_clients_defaults():
    assert pipeline_task(get_model("efficientnet_lite0")).read_options({}) == {"top_k": 5}
    assert pipeline_task(get_model("yolov3_tiny")).read_options({"conf": np.array([[0.5]], np.float32)}) == {"conf": 0.5, "iou": 0.45}
    assert pipeline_task(get_model("ctpn")).read_options({}) == {"line_score": get_model("ctpn").line_min_score}


def test_classifier_answer_is_the_top_k_labels_by_probability():
    task = ClassifierTask(get_model("efficientnet_lite0"))
    prepared = task.prepare(Image.new("RGB", (300, 200), (120, 30, 200)), {"top_k": 3})
    assert prepared.array.shape == (3, 224, 224)
    logits = np.zeros((1, 1000), np.float32)
    logits[0, [207, 1, 999]] = [3.0, 5.0, 4.0]
    answer = task.answer({"logits": logits}, prepared)
    names = task.spec.class_names
    assert answer["labels"].tolist() == [[names[1].encode(), names[999].encode(), names[207].encode()]]
    assert answer["scores"].shape == (1, 3) and answer["scores"][0, 0] > answer["scores"][0, 1] > answer["scores"][0, 2]


def test_detector_and_text_answers_keep_their_shapes_when_nothing_is_found():
    detector = DetectorTask(get_model("yolov3_tiny"))
    prepared = detector.prepare(Image.new("RGB", (640, 320)), {"conf": 0.25, "iou": 0.45})
    boxes = detector.spec.typical_output_shapes()["detections"]
    answer = detector.answer({"detections": np.zeros((1, *boxes), np.float32)}, prepared)
    assert [answer[name].shape for name in ("boxes", "scores", "class_ids")] == [(1, 0, 4), (1, 0), (1, 0)]
    text = TextTask(get_model("ctpn"))
    prepared = text.prepare(Image.new("RGB", (320, 240)), {"line_score": 0.9})
    rows, columns = prepared.array.shape[1] // 16, prepared.array.shape[2] // 16
    outputs = {"scores": np.zeros((1, rows, columns, 10), np.float32), "vertical": np.zeros((1, rows, columns, 10, 2), np.float32)}
    assert [a.shape for a in text.answer(outputs, prepared).values()] == [(1, 0, 4, 2), (1, 0)]


@pytest.mark.parametrize("model, options, outputs", [
    ("resnet50", {"top_k": pb.TYPE_INT32}, {"labels": pb.TYPE_STRING, "scores": pb.TYPE_FP32}),
    ("yolov3_tiny", {"conf": pb.TYPE_FP32, "iou": pb.TYPE_FP32},
     {"boxes": pb.TYPE_FP32, "scores": pb.TYPE_FP32, "class_ids": pb.TYPE_INT32}),
    ("ctpn", {"line_score": pb.TYPE_FP32}, {"lines": pb.TYPE_FP32, "scores": pb.TYPE_FP32}),
])
def test_each_pipeline_config_declares_bytes_in_its_options_and_its_answer(model, options, outputs):
    config = pipeline_config(model, get_model(model), f"{model}_onnxruntime_fp32", 4)
    assert (config.backend, config.max_batch_size, config.HasField("dynamic_batching")) == ("python", 4, True)
    assert config.parameters["variant"].string_value == f"{model}_onnxruntime_fp32"
    assert [(i.name, i.data_type, i.optional) for i in config.input] == (
        [("image", pb.TYPE_STRING, False)] + [(name, dtype, True) for name, dtype in options.items()])
    assert {o.name: o.data_type for o in config.output} == outputs
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, pb.ModelInstanceGroup.KIND_CPU)]


def test_the_gpu_plans_pipelines_take_their_instances_and_prepare_place_from_the_plan(tmp_path):
    """[[pipeline]] instances and prepare reach the config; unset, one instance preparing where its variant runs."""
    from conftest import ROOT
    from trtrepo.build.plan import PipelinePlan, load_plan

    gpu_plan = load_plan(ROOT / "repo.gpu.toml", ["resnet50"], backends="python")
    assert gpu_plan.pipelines == (PipelinePlan("resnet50", "resnet50_inductor_fp16"),)
    plan = tmp_path / "repo.toml"
    plan.write_text('[[variant]]\nmodel = "resnet50"\nengine = "onnxruntime"\nprecision = "fp32"\n'
                    '[[pipeline]]\nname = "resnet50"\nvariant = "resnet50_onnxruntime_fp32"\ninstances = 3\nprepare = "device"\n')
    (pipeline,) = load_plan(plan, backends="python").pipelines
    config = pipeline_config(pipeline.name, get_model("resnet50"), pipeline.variant, 8, prepare=pipeline.prepare,
                             instances=pipeline.instances)
    assert config.instance_group[0].count == 3 and config.parameters["prepare"].string_value == "device"


def test_text_answer_is_the_connected_lines_in_image_pixels():
    """A band of confident anchors in one row of the feature map: one line, corners scaled back to the image."""
    text = TextTask(get_model("ctpn"))
    prepared = text.prepare(Image.new("RGB", (400, 300)), {"line_score": 0.5})  # scaled by 2.4: 960x720
    rows, columns = prepared.array.shape[1] // 16, prepared.array.shape[2] // 16
    scores = np.zeros((1, rows, columns, 10), np.float32)
    scores[0, 10, 5:20, 3] = 0.95
    outputs = {"scores": scores, "vertical": np.zeros((1, rows, columns, 10, 2), np.float32)}
    answer = text.answer(outputs, prepared)
    expected = text.spec.postprocess(outputs, scale=prepared.context, line_min_score=0.5)[0]
    assert len(expected) == 1 and answer["lines"].shape == (1, 1, 4, 2)
    assert np.allclose(answer["lines"][0, 0], expected[0].corners) and np.isclose(answer["scores"][0, 0], expected[0].score)
    assert answer["lines"][0, 0, :, 0].min() == pytest.approx(5 * 16 / 2.4) and answer["lines"][0, 0, :, 0].max() < 400 / 2


def test_the_stage_with_the_largest_share_of_an_images_time_bounds_the_pipeline():
    from trtrepo.perf.pipeline_stages import StageReport

    report = StageReport("yolov3_tiny", "yolov3_tiny_onnxruntime_fp32", 24.0, {"decode": 300.0, "resize": 400.0, "engine": 30.0})
    assert report.bound() == "engine"
    assert report.shared_ceiling() == pytest.approx(1 / (1 / 300 + 1 / 400 + 1 / 30))
    assert "yolov3_tiny (24.0 img/s bytes in): bound by engine (85% of an image's time" in report.line()


def test_the_servers_counters_name_where_a_pipelines_instance_spent_each_image():
    """Two scrapes of Triton's metrics (the pipeline's stage counters, its inference count, its variant's queue
    and compute) give milliseconds per image by stage; what is left of the time that passed was spent outside
    execute, and the largest share holds the pipeline back."""
    from trtrepo.perf.pipeline_stages import StageReport, parse_stage_ms, server_counters, stage_milliseconds

    def scrape(images: int, engine: float, queue_us: float) -> str:
        return "\n".join([
            "# HELP trtrepo_pipeline_stage_seconds Seconds", "# TYPE trtrepo_pipeline_stage_seconds counter",
            f'trtrepo_pipeline_stage_seconds{{model="resnet50",stage="decode"}} {images * 0.0002}',
            f'trtrepo_pipeline_stage_seconds{{model="resnet50",stage="engine"}} {engine}',
            'trtrepo_pipeline_stage_seconds{model="other",stage="engine"} 99',
            f'nv_inference_count{{model="resnet50",version="1"}} {images}',
            'nv_inference_count{model="resnet50_inductor_fp16",version="1"} 123456',
            f'nv_inference_queue_duration_us{{model="resnet50_inductor_fp16",version="1"}} {queue_us}',
            'nv_inference_queue_duration_us{model="resnet50",version="1"} 777777'])

    before = server_counters(scrape(1000, 0.5, 100_000.0), "resnet50", "resnet50_inductor_fp16") | {"clock": 10.0}
    after = server_counters(scrape(3000, 1.4, 300_000.0), "resnet50", "resnet50_inductor_fp16") | {"clock": 12.0}
    spent = parse_stage_ms(stage_milliseconds(before, after))
    assert spent == pytest.approx({"decode": 0.2, "engine": 0.45, "variant": 0.1, "elapsed": 1.0})
    report = StageReport("resnet50", "resnet50_inductor_fp16", 1000.0, {"decode": 5000.0, "engine": 18000.0}, spent)
    assert report.spent() == pytest.approx({"decode": 0.2, "engine": 0.45, "outside execute": 0.35})
    assert report.bound() == "engine"
    assert "went to decode 0.200, engine 0.450 (the variant's own queue and compute 0.100), outside execute 0.350 ms; the largest, engine (45%)" in report.line()
    assert stage_milliseconds(before, before) is None  # no images in between: nothing to say


def test_stage_reports_pair_each_pipeline_with_its_variant_at_the_same_point():
    from trtrepo.imagesets import shipped_photos
    from trtrepo.perf.analyzer import PerfPoint
    from trtrepo.perf.pipeline_stages import stage_reports

    def point(variant: str, concurrency: int, throughput: float, serves: str | None = None) -> PerfPoint:
        return PerfPoint(variant, 1, concurrency, 1, throughput, 1, 1, 1, 0, 0, serves=serves)

    variant = "efficientnet_lite0_onnxruntime_fp32"
    points = [point(variant, 2, 100.0), point(variant, 4, 120.0), point("efficientnet_lite0", 2, 50.0, variant),
              point("efficientnet_lite0", 4, 60.0, variant), point("efficientnet_lite0", 8, 90.0, variant)]
    (report,) = stage_reports(points, shipped_photos()[:3])
    assert (report.measured, report.ceilings["engine"]) == (60.0, 120.0)  # c8 had no tensors-in point beside it
    assert set(report.ceilings) == {"decode", "resize", "engine"} and report.ceilings["decode"] > 0
    assert set(report.outside) == {1} and report.outside[1] > 0
    assert f"the pipeline reached {60 / report.outside[1]:.0%} of the 1-thread figure and 50% of its variant's" in report.line()


@pytest.mark.parametrize("prepared_on", [None, "cpu"])
def test_decode_and_prepare_outside_triton_on_one_and_several_threads(prepared_on):
    """The ceiling decode and prepare set for one pipeline instance and for two at once, on the host's path and on
    the device path (torch on the CPU here)."""
    from trtrepo.imagesets import shipped_photos
    from trtrepo.perf.pipeline_stages import StageReport, decoded_and_prepared

    photos = shipped_photos()[:2]
    outside = {copies: decoded_and_prepared("efficientnet_lite0", photos, prepared_on, copies) for copies in (1, 2)}
    assert all(rate > 0 for rate in outside.values())
    line = StageReport("p", "v", 10.0, {"decode": 50.0, "engine": 40.0}, instances=2, outside=outside).line()
    assert f"{outside[1]:.0f} img/s on 1 thread, {outside[2]:.0f} img/s on 2 threads" in line and "25% of its variant's" in line


@pytest.mark.parametrize("model, largest", [("efficientnet_lite0", 2 / 128), ("resnet50", 1 / 255 / 0.224 + 1e-6)])
def test_device_preprocessing_is_the_hosts_within_a_pixel_level_or_two(model, largest):
    """What a GPU pipeline computes with torch (run here on the CPU) against the host's PIL path, on every shipped
    photo: at most a level or two of 255 apart in a pixel, and those few."""
    from trtrepo.imagesets import shipped_photos
    from trtrepo.specs import load_image

    spec = get_model(model)
    for path in shipped_photos():
        image = load_image(path)
        difference = np.abs(spec.preprocess_tensor(image_tensor(image)).numpy() - spec.preprocess_image(image))
        assert difference.max() <= largest and difference.mean() < 1e-3, (path.name, difference.max(), difference.mean())


def test_device_preprocessing_gives_the_hosts_labels_and_the_same_letterbox():
    """The gate's measure on both paths: EfficientNet-Lite0's top-1 on the shipped photos is the same label;
    YOLO's letterbox is one function on both paths, so equal to the bit."""
    import torch

    from trtrepo.imagesets import shipped_photos
    from trtrepo.specs import load_image

    spec, yolo = get_model("efficientnet_lite0"), get_model("yolov3_tiny")
    images = [load_image(path) for path in shipped_photos()]
    network = spec.build_network("pretrained")
    with torch.inference_mode():
        host = network(torch.from_numpy(np.stack([spec.preprocess_image(i) for i in images]))).argmax(1)
        device = network(torch.stack([spec.preprocess_tensor(image_tensor(i)) for i in images])).argmax(1)
    assert host.tolist() == device.tolist()
    for image in images[:3]:
        array, letterbox = yolo.letterbox_image(image)
        tensor, same = yolo.letterbox_tensor(image_tensor(image))
        assert np.array_equal(tensor.numpy(), array) and same == letterbox
