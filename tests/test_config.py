"""Config generation through Triton's protobuf schema (unit tests, no server)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.format.config import (
    GPU_INPUTS_PARAMETER,
    INSTANCES_PARAMETER,
    ServingOptions,
    Variant,
    apply_serving_options,
    artifact_digest,
    config_from_json,
    config_to_json,
    file_digest,
    is_decoupled,
    model_config,
    read_config,
    runs_on_gpu,
    serving_options_of,
    write_config,
)
from trtrepo.engines import get_engine
from trtrepo.errors import UserError
from trtrepo.models import get_model


def resnet_config(native: bool, options: ServingOptions = ServingOptions()) -> pb.ModelConfig:
    return model_config("resnet50_onnxruntime_fp32", get_model("resnet50"), get_engine("onnxruntime"), "fp32", native, options)


def test_native_onnxruntime_config_uses_platform_and_model_file():
    config = resnet_config(native=True)
    assert config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == "model.onnx"
    assert not config.backend and not config.parameters


def test_python_backend_config_names_engine_and_artifact():
    config = resnet_config(native=False)
    assert config.backend == "python" and not config.platform
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "model": "resnet50", "engine": "onnxruntime", "precision": "fp32", "artifact": "model.onnx", "instances": "1"}


def test_tensors_batching_instances_and_warmup_follow_spec_and_options():
    options = ServingOptions(max_batch_size=16, instances=3, kind="gpu", gpus=(0, 1), preferred_batch_sizes=(8, 16),
                             max_queue_delay_us=500, warmup=True)
    config = resnet_config(native=True, options=options)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", pb.TYPE_FP32, [3, 224, 224])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [1000])]
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert (group.count, group.kind, list(group.gpus)) == (3, pb.ModelInstanceGroup.KIND_GPU, [0, 1])
    (warmup,) = config.model_warmup
    assert warmup.inputs["input"].zero_data and list(warmup.inputs["input"].dims) == [3, 224, 224]


def test_cuda_graph_models_warm_up_every_captured_batch_size():
    options = ServingOptions(max_batch_size=256, kind="gpu", preferred_batch_sizes=(128, 256), cuda_graphs=True)
    config = model_config("resnet50_pytorch_fp16", get_model("resnet50"), get_engine("pytorch"), "fp16", False, options)
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("zero_batch_128", 128), ("zero_batch_256", 256)]
    assert all(list(w.inputs["input"].dims) == [3, 224, 224] for w in config.model_warmup)
    assert serving_options_of(config) == options


def test_serving_options_round_trip_through_pbtxt(tmp_path):
    options = ServingOptions(max_batch_size=8, instances=2, preferred_batch_sizes=(4,), warmup=False)
    write_config(resnet_config(native=False, options=options), tmp_path)
    text = (tmp_path / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "KIND_CPU" in text
    assert serving_options_of(read_config(tmp_path / "config.pbtxt")) == options


def test_reapplying_options_replaces_rather_than_appends():
    config = resnet_config(native=True)
    apply_serving_options(config, ServingOptions(instances=4, warmup=False, preferred_batch_sizes=(2,)))
    assert len(config.instance_group) == 1 and config.instance_group[0].count == 4
    assert not config.model_warmup
    assert list(config.dynamic_batching.preferred_batch_size) == [2]


def test_a_new_instance_count_of_a_python_model_reloads_it_rather_than_updating_it_in_place():
    """Triton updates an instance-count-only change in place; the count as a parameter makes it a reload, so that
    trtrepo's backend divides the cores among the new count. Native backends need no such thing."""
    config = resnet_config(native=False)
    assert config.parameters[INSTANCES_PARAMETER].string_value == "1"
    apply_serving_options(config, serving_options_of(config).updated(instances=3))
    assert config.parameters[INSTANCES_PARAMETER].string_value == "3"
    assert config_from_json(config_to_json(config)) == config
    assert INSTANCES_PARAMETER not in resnet_config(native=True).parameters


@pytest.mark.parametrize("changes, message", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"instances": 0}, "instances"),
    ({"kind": "tpu"}, "instance kind"),
    ({"preferred_batch_sizes": (16,)}, "outside 1..max_batch_size"),
    ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
])
def test_bad_serving_options_are_one_line_errors(changes, message):
    with pytest.raises(UserError, match=message):
        ServingOptions().updated(**changes)


def test_read_config_reports_syntax_errors_with_path(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "x"\nmax_batch_size: "eight"\n')
    with pytest.raises(UserError) as error:
        read_config(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value).strip()


def test_variant_names_parse_back_with_underscored_models():
    variant = Variant.parse("yolov3_tiny_onnxruntime_int8")
    assert (variant.model, variant.engine, variant.precision) == ("yolov3_tiny", "onnxruntime", "int8")
    assert variant.baseline == "yolov3_tiny_pytorch_fp32"
    with pytest.raises(UserError):
        Variant.parse("resnet50")


def test_pbtxt_is_written_by_protobuf_not_templates(tmp_path):
    write_config(resnet_config(native=True), tmp_path)
    parsed = text_format.Parse((tmp_path / "config.pbtxt").read_text(), pb.ModelConfig())
    assert parsed == resnet_config(native=True)


def test_gpu_instances_of_python_models_take_inputs_where_they_lie():
    config = resnet_config(native=False, options=ServingOptions(kind="gpu"))
    assert config.parameters[GPU_INPUTS_PARAMETER].string_value == "no" and runs_on_gpu(config)
    apply_serving_options(config, ServingOptions(kind="cpu"))
    assert GPU_INPUTS_PARAMETER not in config.parameters and not runs_on_gpu(config)
    assert GPU_INPUTS_PARAMETER not in resnet_config(native=True, options=ServingOptions(kind="gpu")).parameters


def test_pipelined_python_models_are_decoupled_and_native_ones_untouched():
    config = resnet_config(native=False, options=ServingOptions(pipelined=True))
    assert is_decoupled(config) and serving_options_of(config).pipelined
    apply_serving_options(config, serving_options_of(config).updated(instances=3))
    assert is_decoupled(config), "changing another option keeps the model pipelined"
    apply_serving_options(config, serving_options_of(config).updated(pipelined=False))
    assert not is_decoupled(config) and not config.HasField("model_transaction_policy")
    assert not is_decoupled(resnet_config(native=True, options=ServingOptions(pipelined=True)))


def test_a_folder_artifact_digest_follows_every_file_in_it(tmp_path):
    saved = tmp_path / "model.savedmodel"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.index").write_bytes(b"index")
    before = artifact_digest(saved)
    assert before == artifact_digest(saved) and len(before) == 64
    (saved / "variables" / "variables.index").write_bytes(b"other")
    assert artifact_digest(saved) != before
    assert artifact_digest(saved / "saved_model.pb") == file_digest(saved / "saved_model.pb")


@pytest.mark.parametrize("model, engine, labelled", [
    ("resnet50", "onnxruntime", True), ("efficientnet_lite0", "tensorflow", True), ("yolov3_tiny", "pytorch", False),
    ("ctpn", "onnxruntime", False),
])
def test_image_inputs_declare_nchw_and_classifiers_name_their_labels_file(model, engine, labelled, tmp_path):
    from trtrepo.format.config import LABELS_FILE, ensemble_config, write_labels

    spec = get_model(model)
    config = model_config(f"{model}_{engine}_fp32", spec, get_engine(engine), "fp32", True, ServingOptions(warmup=False))
    assert [i.format for i in config.input] == [pb.ModelInput.FORMAT_NCHW]
    assert [o.label_filename for o in config.output][:1] == ([LABELS_FILE] if labelled else [""])
    write_labels(spec, tmp_path)
    assert (tmp_path / LABELS_FILE).is_file() == labelled
    if labelled:
        assert (tmp_path / LABELS_FILE).read_text().splitlines()[967] == "espresso"
    assert ensemble_config("whole", [(f"{model}_{engine}_fp32", spec)], 1).input[0].format == pb.ModelInput.FORMAT_NCHW
