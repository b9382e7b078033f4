"""The serving-option changes a trial reloads a model with (perf.trial.changed_config), on the configs trtrepo writes."""

from __future__ import annotations

import pytest

from trtrepo.errors import UserError
from trtrepo.format.config import ServingOptions, apply_serving_options, serving_options_of
from trtrepo.perf.trial import changed_config
from tritonclient.grpc import model_config_pb2 as pb


def generated(**options: object) -> pb.ModelConfig:
    config = pb.ModelConfig(name="resnet50_onnxruntime_fp32", backend="python")
    config.input.add(name="images", data_type=pb.TYPE_FP32, dims=[3, 224, 224])
    apply_serving_options(config, ServingOptions(**options))
    return config


def test_any_serving_option_changes_and_the_rest_stays():
    original = generated(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=2000, instances=1)
    changed = changed_config(original, {"instances": 2, "max_queue_delay_us": 500, "cuda_graphs": None})
    assert serving_options_of(changed) == serving_options_of(original).updated(instances=2, max_queue_delay_us=500)
    assert serving_options_of(original).instances == 1  # the original is untouched
    assert [w.batch_size for w in changed.model_warmup] == [w.batch_size for w in original.model_warmup]


def test_a_smaller_batch_limit_takes_the_preferred_sizes_above_it_along():
    """Model Analyzer drops every candidate whose max_batch_size is below a preferred size; a trial lowers both."""
    changed = changed_config(generated(max_batch_size=8, preferred_batch_sizes=(2, 4, 8)), {"max_batch_size": 4})
    assert (changed.max_batch_size, list(changed.dynamic_batching.preferred_batch_size)) == (4, [2, 4])
    explicit = changed_config(generated(), {"max_batch_size": 2, "preferred_batch_sizes": (1,)})
    assert list(explicit.dynamic_batching.preferred_batch_size) == [1]


def test_what_a_trial_cannot_set_is_one_line():
    config = generated()
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_CPU)
    with pytest.raises(UserError, match="2 instance groups"):
        changed_config(config, {"instances": 2})
    with pytest.raises(UserError, match="preferred batch sizes \\[16\\] lie outside"):
        changed_config(generated(), {"preferred_batch_sizes": (16,)})
