"""The options every ONNX Runtime session of trtrepo's uses (the engine's runners, the per-layer comparison): a leaf
that both import, so that neither imports the other. It decides, per machine, how quantized (U8S8) products run.

ONNX Runtime's x86-64 kernels for U8S8 products take one of two paths. Where the CPU has VNNI (AVX512-VNNI,
AVX-VNNI) or AMX, products are summed straight into 32 bits: exact, and fast. Where it has AVX2 alone, the fast
kernels sum pairs of products in 16 bits (VPMADDUBSW), which saturate: EfficientNet-Lite0 INT8 then agreed with
FP32's top-1 on 73% of the evaluation samples, against 97% in ONNX Runtime's precise mode
(``session.x64quantprecision``), which costs INT8 most of its speed. So the precise mode is switched on where, and
only where, the CPU lacks VNNI and AMX; the gate measures a variant in the mode it will be served in, and the
variant's build record names that mode, so that a machine which would serve it in the other says so at load.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort

#: The session entry that makes ONNX Runtime's AVX2 U8S8 kernels accumulate without saturating.
X64_QUANT_PRECISION = "session.x64quantprecision"
#: CPU flags (as /proc/cpuinfo names them) whose instructions sum U8S8 products in 32 bits, by what a user reads.
WIDE_ACCUMULATION = {"amx_int8": "AMX", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI"}


@dataclass(frozen=True)
class U8S8Mode:
    """How this machine's ONNX Runtime runs quantized products, and why."""

    precise: bool
    reason: str

    @property
    def name(self) -> str:
        return "precise" if self.precise else "fast"

    def line(self) -> str:
        return f"U8S8 products in {self.name} mode ({self.reason})"

    def as_dict(self) -> dict[str, object]:
        return {"u8s8_mode": self.name, "reason": self.reason}


@functools.lru_cache(maxsize=None)
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where it does not."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def u8s8_mode(flags: frozenset[str] | None = None, machine: str | None = None) -> U8S8Mode:
    """The mode for a CPU with these ``flags`` (this one's by default): precise only on x86-64 with AVX2 and
    without VNNI or AMX."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return U8S8Mode(False, f"{machine}: ONNX Runtime's saturating AVX2 kernels do not run here")
    flags = cpu_flags() if flags is None else flags
    wide = [name for flag, name in WIDE_ACCUMULATION.items() if flag in flags]
    if wide:
        return U8S8Mode(False, f"this CPU has {', '.join(sorted(wide))}: products summed in 32 bits, no saturation")
    if "avx2" in flags:
        return U8S8Mode(True, "this CPU has AVX2 without VNNI or AMX: the fast kernels sum pairs in 16 bits and saturate")
    return U8S8Mode(False, "this CPU has no AVX2: ONNX Runtime's saturating AVX2 kernels do not run here")


def session_options(threads: int, mode: U8S8Mode | None = None) -> "ort.SessionOptions":
    """Session options every trtrepo ONNX Runtime session uses: threads, and quantized products in this
    machine's mode (``mode``: another CPU's, as the tests choose)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if (mode or u8s8_mode()).precise:
        options.add_session_config_entry(X64_QUANT_PRECISION, "1")
    return options
