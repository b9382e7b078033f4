"""The options every ONNX Runtime session of trtrepo's uses (the engine's runners, the per-layer comparison): a leaf
that both import, so that neither imports the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort


#: ONNX Runtime's precise mode for U8S8 products on x86-64 AVX2 without VNNI. Its fast kernels sum pairs of
#: products in 16 bits (VPMADDUBSW), which saturate: measured on EfficientNet-Lite0 (AVX2, no VNNI), INT8 agreed
#: with FP32's top-1 on 73% of the evaluation samples with them and on 97% in precise mode, as in the QDQ graph's
#: own arithmetic; 7-bit weights (reduce_range), Entropy or per-tensor calibration did not help. Elsewhere a no-op.
X64_QUANT_PRECISION = ("session.x64quantprecision", "1")


def session_options(threads: int) -> "ort.SessionOptions":
    """Session options every trtrepo ONNX Runtime session uses: threads, and quantized products that do not
    saturate."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry(*X64_QUANT_PRECISION)
    return options
