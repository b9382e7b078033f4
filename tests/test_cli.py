"""The command line as users meet it: help, flag errors, and in-place config edits."""

from __future__ import annotations

import shutil

from conftest import trtrepo, trtrepo_process
from trtrepo.format.config import read_config


def test_help_lists_every_command():
    result = trtrepo_process("--help")
    assert result.returncode == 0
    for command in ("export", "build", "repo", "config", "validate", "serve", "perf", "tune", "bench", "demo"):
        assert f"  {command} " in result.stdout


def test_config_edits_instances_and_batching_in_place(small_repo, tmp_path):
    model_dir = tmp_path / "resnet50_onnxruntime_fp32"
    shutil.copytree(small_repo / model_dir.name, model_dir)
    result = trtrepo("config", str(model_dir), "--instances", "3", "--preferred-batch-sizes", "2", "--no-warmup")
    assert result.returncode == 0, result.stderr
    config = read_config(model_dir / "config.pbtxt")
    assert config.instance_group[0].count == 3
    assert list(config.dynamic_batching.preferred_batch_size) == [2]
    assert not config.model_warmup and config.max_batch_size == 4  # untouched fields stay


def test_config_refuses_a_variant_smaller_than_its_pipelines_batch(small_repo, tmp_path):
    """A pipeline gathering more than its variant takes would fail every batch of several images: refused, and the
    config on disk is the one it was."""
    for name in ("efficientnet_lite0", "efficientnet_lite0_onnxruntime_fp32"):
        shutil.copytree(small_repo / name, tmp_path / name)
    before = (tmp_path / "efficientnet_lite0_onnxruntime_fp32" / "config.pbtxt").read_text()
    result = trtrepo("config", str(tmp_path / "efficientnet_lite0_onnxruntime_fp32"), "--max-batch-size", "2",
                     "--preferred-batch-sizes", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "refused" in result.stderr and "max_batch_size 4 is above its variant" in result.stderr
    assert (tmp_path / "efficientnet_lite0_onnxruntime_fp32" / "config.pbtxt").read_text() == before


def test_bad_input_gives_one_line_and_non_zero_exit(small_repo, tmp_path):
    """Every command once as a user runs it, a process of its own; the other command tests run in process."""
    (tmp_path / "a_file").write_text("")  # no folder can be made under it: an --output results cannot be written to
    shutil.copytree(small_repo / "resnet50_onnxruntime_fp32", tmp_path / "my repo ü" / "resnet50_onnxruntime_fp32")
    cases = [
        (("config", str(small_repo / "resnet50_onnxruntime_fp32"), "--preferred-batch-sizes", "64"), "outside 1..max_batch_size"),
        (("config", str(tmp_path), "--instances", "2"), "no config.pbtxt there; give the model's folder"),
        (("perf", "--instances", "one"), "comma-separated whole numbers"),
        (("perf", "--model-repository", str(tmp_path)), "no models"),
        (("perf", "--output", str(tmp_path / "a_file" / "results")), "cannot write results to"),
        (("eval", "resnet50", "--data", str(tmp_path), "--output", str(tmp_path / "a_file")), "cannot write results to"),
        (("perf", "--servers", "1,3", "--url", "127.0.0.1:1,127.0.0.1:2"), "needs 3 servers; --url gives 2"),
        (("tune", "--target-rate", "100"), "--target-rate needs --max-p99-ms"),
        (("tune", "--model-repository", str(small_repo), "--models", "resnet5"), "no variants of 'resnet5'"),
        (("serve", "--model-repository", str(tmp_path / "absent")), "does not exist"),
        (("build", "resnet50", "--engine", "tflite"), "(see --help)"),
        (("repo", "--plan", str(tmp_path / "absent.toml")), "cannot read plan"),
        (("export", "resnet5", "--output", str(tmp_path / "x.onnx")), "unknown model 'resnet5'"),
        (("validate", str(tmp_path / "absent")), "not a directory"),
        (("validate", str(tmp_path / "my repo ü")), "cannot start a model from"),
        (("serve", "--model-repository", str(tmp_path / "my repo ü")), "holds ' ' 'ü', which tritonserver 2.51"),
        (("eval", "resnet50"), "resnet50: pass --data DIR"),
        (("compare", "a", "b", "--repo", str(small_repo)), "'a' is not a variant name"),
        (("tfserving", str(tmp_path), "--output", str(tmp_path / "tfs")), "no TensorFlow variants to export"),
        (("bench", "--model-repository", str(tmp_path)), "no models"),
        (("soak", "--seconds", "0"), "'--seconds'"),
        (("push", str(tmp_path / "absent"), "s3://models/prod"), "not pushed"),
        (("deploy", "k8s", "--repository", "model_repository", "--output", str(tmp_path)), "push it there first"),
        (("gpu-pack", "--bogus"), "No such option: --bogus"),
        (("demo", "--bogus"), "No such option: --bogus"),
    ]
    for args, message in cases:
        result = trtrepo_process(*args)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.stderr)


def test_a_variant_a_pipeline_calls_is_not_made_pipelined_and_one_that_is_is_reported(small_repo, tmp_path):
    """A pipeline calling a pipelined (decoupled) variant loses its stub under load in Triton 2.51: `config` refuses
    to make its variant pipelined, keeping the config, and validate reports a repository where it is."""
    from trtrepo.format.config import CONFIG_FILE, apply_serving_options, read_config, serving_options_of, write_config
    from trtrepo.format.validate import validate_repository

    variant = tmp_path / "efficientnet_lite0_onnxruntime_fp32"
    for name in ("efficientnet_lite0", variant.name):
        shutil.copytree(small_repo / name, tmp_path / name)
    before = (variant / CONFIG_FILE).read_text()
    result = trtrepo("config", str(variant), "--pipelined")
    assert result.returncode == 2 and result.stderr.startswith("error: refused"), result.stderr
    assert f"`trtrepo config {variant.name} --no-pipelined`" in result.stderr
    assert (variant / CONFIG_FILE).read_text() == before
    config = read_config(variant / CONFIG_FILE)
    apply_serving_options(config, serving_options_of(config).updated(pipelined=True))
    write_config(config, variant)
    (problem,) = validate_repository(tmp_path)
    assert f"its variant {variant.name} is pipelined (decoupled)" in problem
