"""What a pipeline meets never takes the server or its stub down.

- Its stub ends without a segfault, and a reload with other instances keeps the server up: in Triton's Python backend
  (24.10) a Triton metric freed at the stub's teardown reads the stub's gone shared memory (Metric::SaveToSharedMemory
  on a null pool; fixed upstream in python_backend PR 429), and one freed while serving deletes, in the server, the
  metric the model's other instances and next version share. The pipeline's metrics are never freed by Python
  (pipeline.outlive_the_stub). The kernel's log is where a stub's death shows: the server exits 0 all the same.
- A variant that refuses the pipeline's batch fails that batch's requests, each with its own response: one response
  object returned for several requests kills tritonserver 24.10 itself (SIGSEGV in TRITONBACKEND_ModelInstanceExecute).
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trtrepo.clients.resnet_client import classify_server_side
from trtrepo.format.config import CONFIG_FILE, apply_serving_options, read_config, serving_options_of, write_config
from trtrepo.serving.server import Ports, TritonServer, is_ready

pytestmark = pytest.mark.integration
PIPELINE, VARIANT = "efficientnet_lite0", "efficientnet_lite0_onnxruntime_fp32"


def stub_segfaults() -> list[str]:
    found = subprocess.run(["dmesg"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"the kernel's log is not readable here: {found.stderr.strip()[:100]}")
    return [line for line in found.stdout.splitlines() if "segfault" in line and "triton_python" in line]


def test_a_pipeline_reloaded_and_stopped_takes_nothing_down(small_repo: Path, tmp_path: Path, darknet_photos: Path):
    """Reloaded with two instances and back to one (as trtrepo perf's trials do), then stopped: answers throughout,
    no SIGSEGV of the server, no segfault of a stub."""
    from trtrepo.format.config import config_to_json
    from trtrepo.perf.trial import changed_config
    from trtrepo.serving.client import InferenceClient

    repo = tmp_path / "model_repository"
    for name in (PIPELINE, VARIANT):
        shutil.copytree(small_repo / name, repo / name)
    photos = sorted(darknet_photos.glob("*.jpg"))
    before = stub_segfaults()
    with TritonServer(repo, Ports.free(), model_control="explicit") as server:
        client = InferenceClient(PIPELINE, url=server.grpc_url, protocol="grpc")
        original = client.model_config(PIPELINE)
        for instances in (2, 1):
            client.load_model(PIPELINE, config_to_json(changed_config(original, {"instances": instances})))
            answers = classify_server_side(photos, PIPELINE, server.grpc_url, "grpc", top_k=1)
            assert len(answers) == len(photos) and all(answers)
        assert is_ready(server.ports.http, server.connect_host)
    log = server.log_file.read_text()
    assert "Signal (11)" not in log and f"successfully unloaded '{PIPELINE}'" in log, log[-1500:]
    assert stub_segfaults()[len(before):] == []


def test_a_variant_refusing_the_pipelines_batch_fails_its_requests_not_the_server(small_repo: Path, tmp_path: Path,
                                                                                   darknet_photos: Path):
    import tritonclient.grpc as grpc

    repo = tmp_path / "model_repository"
    for name in (PIPELINE, VARIANT):
        shutil.copytree(small_repo / name, repo / name)
    config = read_config(repo / VARIANT / CONFIG_FILE)
    apply_serving_options(config, serving_options_of(config).updated(max_batch_size=1, preferred_batch_sizes=()))
    write_config(config, repo / VARIANT)  # as a hand edit would: trtrepo config refuses it
    photo = (darknet_photos / "dog.jpg").read_bytes()
    with TritonServer(repo, Ports.free()) as server:
        def ask(_: int) -> str:
            with grpc.InferenceServerClient(server.grpc_url) as client:
                image = grpc.InferInput("image", [1, 1], "BYTES")
                image.set_data_from_numpy(np.array([[photo]], dtype=object))
                try:
                    client.infer(PIPELINE, [image])
                    return "answered"
                except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
                    return "refused by the variant" if VARIANT in str(exc) else f"lost: {exc}"

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(ask, range(48)))
        assert is_ready(server.ports.http, server.connect_host)
    assert set(outcomes) <= {"answered", "refused by the variant"}, outcomes
    assert "refused by the variant" in outcomes  # batches of several images met the variant's limit
    assert "Signal (11)" not in server.log_file.read_text()


def test_a_pipelines_image_bounds_refuse_alone_and_large_images_leave_no_memory_behind(small_repo: Path, tmp_path: Path,
                                                                                   darknet_photos: Path):
    """The pipeline's config bounds one request (max_image_bytes, max_image_pixels): beyond them a request gets one
    400-class line and the others are answered. Four 6000x6000 JPEGs at once, then small photos: the stub's memory
    comes back near where it was (glibc's mmap threshold held fixed: README, the pipeline's memory)."""
    import io

    from PIL import Image

    from trtrepo.errors import UserError
    from trtrepo.serving.client import InferenceClient
    from trtrepo.serving.stubs import resident_bytes, stubs_of

    repo = tmp_path / "model_repository"
    for name in (PIPELINE, VARIANT):
        shutil.copytree(small_repo / name, repo / name)
    photos = sorted(darknet_photos.glob("*.jpg"))
    large = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (6000, 6000, 3), dtype=np.uint8)).save(large, "JPEG", quality=80)
    with TritonServer(repo, Ports.free()) as server:
        ask = lambda data: InferenceClient(PIPELINE, url=server.grpc_url, protocol="grpc").infer(  # noqa: E731
            {"image": np.array([[data]], dtype=object), "top_k": np.array([[1]], dtype=np.int32)})
        classify_server_side(photos, PIPELINE, server.grpc_url, "grpc", top_k=1)  # warm: every buffer of a photo
        (stub,) = [s for s in stubs_of(server.process.pid) if s.model == PIPELINE]
        before = resident_bytes([stub.pid])
        with ThreadPoolExecutor(4) as pool:
            assert all(a["labels"].shape == (1, 1) for a in pool.map(ask, [large.getvalue()] * 4))
        classify_server_side(photos, PIPELINE, server.grpc_url, "grpc", top_k=1)
        after = resident_bytes([stub.pid])
        print(f"\nstub memory: {before >> 20} MB before four 36-megapixel images, {after >> 20} MB after")
        assert after - before < 300 << 20, f"the stub kept {(after - before) >> 20} MB after four 36-megapixel images"

    config = read_config(repo / PIPELINE / CONFIG_FILE)
    assert config.parameters["max_image_pixels"].string_value == str(8192 * 8192)
    config.parameters["max_image_pixels"].string_value = str(1000 * 1000)
    config.parameters["max_image_bytes"].string_value = str(2 << 20)
    write_config(config, repo / PIPELINE)
    with TritonServer(repo, Ports.free()) as server:
        ask = lambda data: InferenceClient(PIPELINE, url=server.grpc_url, protocol="grpc").infer(  # noqa: E731
            {"image": np.array([[data]], dtype=object), "top_k": np.array([[1]], dtype=np.int32)})
        with pytest.raises(UserError, match=r"declares 6000x6000 pixels, more than the 1,000,000") as pixels:
            ask(large.getvalue()[: 1 << 20])  # the header says 6000x6000; the rest is not needed to refuse it
        with pytest.raises(UserError, match=r"more than the 2,097,152 this pipeline takes \(max_image_bytes") as size:
            ask(large.getvalue())
        assert [str(e.value.__cause__.status()) for e in (pixels, size)] == ["StatusCode.INVALID_ARGUMENT"] * 2
        assert ask((darknet_photos / "dog.jpg").read_bytes())["labels"].shape == (1, 1)
