"""TF-Serving, the baseline server: export a repository's TensorFlow variants as TF-Serving model base paths,
with a model_config_list and batching parameters that mirror each variant's Triton dynamic batching.

Written through TF-Serving's own protos: ModelServerConfig from tensorflow-serving-api; BatchingParameters, which
that package does not ship (it lives in TF-Serving's session_bundle_config.proto), declared here field for field
from that .proto (numbers 1-7, google.protobuf wrappers) so its text format is TF-Serving's.

Each version folder gets its own ``batching_params.pbtxt``, which TF-Serving reads with
``--enable_per_model_batching_parameters``; the global ``batching_parameters.txt`` mirrors the one variant
exactly when one is exported, and otherwise holds what the server shares: the batch threads of all variants.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtrepo.engines.base import served_batch_sizes
from trtrepo.errors import UserError
from trtrepo.format.config import CONFIG_FILE, engine_of, read_config, serving_options_of


MODELS_CONFIG = "models.config"
BATCHING_FILE = "batching_parameters.txt"
#: TF-Serving's per-model batching file, read from each SavedModel (version) folder.
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"
#: TF-Serving's gRPC port, where its PredictionService (and perf_analyzer --service-kind tfserving) listens.
GRPC_PORT = 8500


@functools.cache
def batching_parameters_class() -> type:
    """TF-Serving's tensorflow.serving.BatchingParameters message class (see the module docstring)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    types = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config_batching.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = proto.message_type.add(name="BatchingParameters")
    for number, (name, wrapper) in enumerate([("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
                                              ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
                                              ("thread_pool_name", "StringValue")], start=1):
        message.field.add(name=name, number=number, type=types.TYPE_MESSAGE, label=types.LABEL_OPTIONAL,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, type=types.TYPE_INT64, label=types.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=types.TYPE_BOOL, label=types.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


@dataclass(frozen=True)
class Exported:
    """One TensorFlow variant as TF-Serving serves it."""

    name: str
    versions: tuple[int, ...]
    max_batch_size: int
    batch_timeout_micros: int
    allowed_batch_sizes: tuple[int, ...]
    num_batch_threads: int


def tensorflow_variants(repository: Path) -> list[tuple[Path, Exported]]:
    """The repository's TensorFlow variants (either backend) and their Triton batching, translated."""
    found = []
    for config_path in sorted(Path(repository).glob(f"*/{CONFIG_FILE}")):
        config = read_config(config_path)
        engine = engine_of(config)
        if engine is None or engine.name != "tensorflow":
            continue
        options = serving_options_of(config)
        versions = tuple(sorted(int(p.name) for p in config_path.parent.iterdir()
                                if p.name.isdigit() and (p / engine.artifact).is_dir()))
        if not versions:
            raise UserError(f"{config_path.parent}: no version folder holds {engine.artifact}; rebuild with `trtrepo repo`")
        found.append((config_path.parent, Exported(
            name=config.name, versions=versions, max_batch_size=options.max_batch_size,
            batch_timeout_micros=options.max_queue_delay_us,
            allowed_batch_sizes=served_batch_sizes(options.max_batch_size, options.preferred_batch_sizes),
            num_batch_threads=options.instances)))
    return found


def batching_parameters(exported: list[Exported]):
    """The server-wide BatchingParameters: the variant's own where there is one, else the shared thread pool."""
    if len(exported) == 1:
        return per_model_batching(exported[0])
    parameters = batching_parameters_class()()
    parameters.num_batch_threads.value = sum(e.num_batch_threads for e in exported)
    parameters.max_batch_size.value = max(e.max_batch_size for e in exported)
    parameters.batch_timeout_micros.value = min(e.batch_timeout_micros for e in exported)
    return parameters


def per_model_batching(exported: Exported):
    """A variant's Triton dynamic batching as TF-Serving's: the largest batch, the queue delay as the batch timeout,
    the preferred sizes and the maximum as the allowed sizes (TF-Serving pads a batch up to the next one), a
    batch thread per Triton instance."""
    parameters = batching_parameters_class()()
    parameters.max_batch_size.value = exported.max_batch_size
    parameters.batch_timeout_micros.value = exported.batch_timeout_micros
    parameters.num_batch_threads.value = exported.num_batch_threads
    parameters.allowed_batch_sizes.extend(exported.allowed_batch_sizes)
    return parameters


def models_config(exported: list[Exported], base_path: str):
    """TF-Serving's ModelServerConfig: one model_config_list entry per variant under ``base_path``."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for entry in exported:
        # No version policy: TF-Serving's default, the latest version, is Triton's default too.
        config.model_config_list.config.add(name=entry.name, base_path=f"{base_path.rstrip('/')}/{entry.name}",
                                            model_platform="tensorflow")
    return config


def export_tfserving(repository: Path, output: Path, base_path: str | None = None,
                     log: Callable[[str], None] = lambda _: None) -> list[Exported]:
    """Write ``output``/<variant>/<version>/ (the SavedModel and its batching_params.pbtxt), models.config and
    batching_parameters.txt. Each file lands whole (written beside, then renamed): an interrupted export leaves what
    was there. ``base_path``: where ``output`` is mounted in the TF-Serving container (default: ``output`` itself)."""
    from google.protobuf import text_format

    if importlib.util.find_spec("tensorflow_serving") is None:
        raise UserError("trtrepo tfserving needs tensorflow-serving-api: make install (or pip install --no-deps "
                        "'tensorflow-serving-api==2.19.*')")
    if not Path(repository).is_dir():
        raise UserError(f"{repository}: not a model repository folder")
    found = tensorflow_variants(repository)
    if not found:
        raise UserError(f"{repository}: no TensorFlow variants to export; build some first (a plan variant with "
                        "engine = \"tensorflow\", or trtrepo build MODEL --engine tensorflow)")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for model_dir, exported in found:
        for version in exported.versions:
            target = output / exported.name / str(version)
            target.parent.mkdir(exist_ok=True)
            staged = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
            try:
                shutil.copytree(model_dir / str(version) / "model.savedmodel", staged / "saved", dirs_exist_ok=True)
                (staged / "saved" / PER_MODEL_BATCHING_FILE).write_text(
                    text_format.MessageToString(per_model_batching(exported)))
                if target.exists():
                    shutil.rmtree(target)
                (staged / "saved").rename(target)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        log(f"{exported.name}: versions {', '.join(map(str, exported.versions))} -> {output / exported.name}")
    everything = [exported for _, exported in found]
    _write_whole(output / MODELS_CONFIG, text_format.MessageToString(models_config(everything, mount_path(output, base_path))))
    _write_whole(output / BATCHING_FILE, text_format.MessageToString(batching_parameters(everything)))
    return everything


def _write_whole(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def mount_path(output: Path, base_path: str | None) -> str:
    """Where TF-Serving finds the export, as models.config names it: ``base_path``, else the export folder itself."""
    return base_path or str(Path(output).resolve())


def serve_command(output: Path, base_path: str | None) -> str:
    """The docker command that serves an export with TF-Serving's own image, batching as exported, on gRPC 8500."""
    mount = mount_path(output, base_path)
    return (f"docker run --rm -p {GRPC_PORT}:{GRPC_PORT} -v {Path(output).resolve()}:{mount} tensorflow/serving "
            f"--model_config_file={mount}/{MODELS_CONFIG} --enable_batching "
            f"--batching_parameters_file={mount}/{BATCHING_FILE} --enable_per_model_batching_parameters")
