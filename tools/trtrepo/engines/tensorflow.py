"""TensorFlow: a SavedModel of the network's Keras twin (trtrepo.tf_networks), the study's TensorFlow baseline.

Built from the same weights as every other variant and checked against PyTorch through the saved artifact itself
(each output reported, one failure for all). Served natively by Triton's TensorFlow backend
(``platform: "tensorflow_savedmodel"``) where the server has it, else through the Python backend running
TensorFlow; the same folder is what TF-Serving serves (trtrepo tfserving). CPU only: the wheel trtrepo installs
is tensorflow-cpu.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trtrepo.engines.base import BuildInputs, Engine, Runner
from trtrepo.errors import UserError
from trtrepo.tf_networks import import_tensorflow

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec


#: The signature Triton's TensorFlow backend and TF-Serving call by default.
SIGNATURE = "serving_default"
#: Beside the SavedModel: TensorFlow and Keras versions, parity with PyTorch, build time (the manifest's engine_build).
RECORD_FILE = "tensorflow.json"
PARITY_BATCH = 2


class TensorFlowEngine(Engine):
    name = "tensorflow"
    precisions = ("fp32",)
    artifact = "model.savedmodel"
    native_backend = "tensorflow"
    native_platform = "tensorflow_savedmodel"
    instance_kinds = ("cpu",)

    def unavailable(self, precision: str) -> str | None:
        if importlib.util.find_spec("tensorflow") is None:
            return "TensorFlow is not installed (pip install 'trtrepo[tensorflow]', or make install)"
        return None

    def not_applicable(self, spec: "ModelSpec") -> str | None:
        if spec.keras_twin is None:
            return f"{spec.name} has no Keras twin (trtrepo.tf_networks) for the TensorFlow engine"
        return None

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        from trtrepo.engines.pytorch import network_runner
        from trtrepo.tf_networks import keras_twin

        tf = import_tensorflow()  # before keras, which imports TensorFlow
        import keras

        started = time.perf_counter()
        twin = keras_twin(inputs.spec, inputs.network)
        save_savedmodel(twin, inputs.spec, out_file)
        batch = inputs.spec.example_batch(PARITY_BATCH)
        reference = network_runner(inputs.spec, inputs.network)(batch)
        saved = self.load(inputs.spec, out_file, precision, "cpu", os.cpu_count() or 1)(batch)
        parity = check_parity(inputs.spec, saved, reference)
        inputs.log(f"{inputs.spec.name}: TensorFlow SavedModel, parity with PyTorch "
                   + ", ".join(f"{what} {diff:.2e}" for what, diff in parity.items()))
        record = {"tensorflow": tf.__version__, "keras": keras.__version__, "parity_max_abs": parity,
                  "build_seconds": round(time.perf_counter() - started, 1)}
        (out_file.parent / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def build_record(self, artifact: Path) -> dict:
        path = Path(artifact).parent / RECORD_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        tf = import_tensorflow()
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TensorFlow already started in this process: its threads stay as they are
                pass
        signature = tf.saved_model.load(str(artifact)).signatures[SIGNATURE]
        names = [t.name for t in spec.outputs]

        def run(batch: dict) -> dict:
            outputs = signature(**{name: tf.constant(value) for name, value in batch.items()})
            return {name: outputs[name].numpy() for name in names}

        return run


def save_savedmodel(twin, spec: "ModelSpec", out_file: Path) -> None:
    """Export ``twin`` as a SavedModel whose serving_default signature takes and returns the spec's tensor names
    (what Triton's TensorFlow backend matches config tensors against, and TF-Serving's clients name)."""
    tf = import_tensorflow()  # before keras, which imports TensorFlow
    import keras

    signature = [tf.TensorSpec((None, *(d if d > 0 else None for d in t.shape)), t.dtype, name=t.name)
                 for t in spec.inputs]
    names = [t.name for t in spec.outputs]

    def serve(*tensors):
        result = twin(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return dict(zip(names, result))

    archive = keras.export.ExportArchive()
    archive.track(twin)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=signature)
    archive.write_out(str(out_file), verbose=False)


def check_parity(spec: "ModelSpec", ours: dict, reference: dict) -> dict[str, float]:
    """Each of the spec's twin tolerances, measured; every one that fails is named in one UserError."""
    measured = {tol.what: tol.difference(ours[tol.output], reference[tol.output]) for tol in spec.twin_tolerances()}
    failed = [f"{tol.what} differ by {measured[tol.what]:.3g} (at most {tol.max_abs:g})"
              for tol in spec.twin_tolerances() if not measured[tol.what] <= tol.max_abs]
    if failed:
        raise UserError(f"{spec.name}: the TensorFlow twin does not match PyTorch: {'; '.join(failed)}")
    return measured


def tensorflow_note(names: list[str]) -> str:
    """Where TensorFlow ran, for a report (sweep, bench, eval, the demo's table) that has TensorFlow variants or
    TF-Serving points; else nothing."""
    if not any("_tensorflow_" in name for name in names):
        return ""
    return ("TensorFlow: a *_tensorflow_fp32 variant runs TensorFlow (CPU) inside Triton's Python backend on a server "
            "without Triton's TensorFlow backend, the embedded one included, and natively (tensorflow_savedmodel) on a "
            "full Triton; a name ending in @tfserving is that SavedModel on TF-Serving.\n")
