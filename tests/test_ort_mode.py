"""ONNX Runtime's U8S8 mode: precise only where the CPU lacks VNNI and AMX, recorded at build, said at load, and the
same in process and served."""

import json

import pytest

from trtrepo.engines import get_engine
from trtrepo.engines.onnxruntime import RECORD_FILE
from trtrepo.engines.ort_session import X64_QUANT_PRECISION, cpu_flags, session_options, u8s8_mode

AVX2_ONLY = frozenset({"sse4_1", "avx", "avx2", "fma"})


@pytest.mark.parametrize("flags, precise, reason", [
    (AVX2_ONLY, True, "AVX2 without VNNI or AMX"),
    (AVX2_ONLY | {"avx512f", "avx512bw", "avx512_vnni"}, False, "has AVX512-VNNI: products summed in 32 bits"),
    (AVX2_ONLY | {"avx_vnni"}, False, "has AVX-VNNI"),
    (AVX2_ONLY | {"amx_int8", "amx_tile"}, False, "has AMX"),
    (frozenset({"sse4_1"}), False, "no AVX2"),
])
def test_precise_mode_only_where_the_fast_kernels_saturate(flags, precise, reason):
    mode = u8s8_mode(flags, "x86_64")
    assert mode.precise is precise and reason in mode.reason


def test_other_architectures_keep_the_fast_kernels():
    assert not u8s8_mode(AVX2_ONLY, "aarch64").precise


def test_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_session_options_set_the_precise_entry_only_in_precise_mode():
    assert session_options(1, u8s8_mode(AVX2_ONLY, "x86_64")).get_session_config_entry(X64_QUANT_PRECISION) == "1"
    with pytest.raises(Exception, match="does not have configuration"):
        session_options(1, u8s8_mode(AVX2_ONLY | {"avx_vnni"}, "x86_64")).get_session_config_entry(X64_QUANT_PRECISION)


@pytest.mark.parametrize("recorded, warning", [(None, True), ("same", False), ("other", True)])
def test_load_note_says_whether_the_served_mode_was_gated(tmp_path, recorded, warning):
    artifact = tmp_path / "model.onnx"
    here = u8s8_mode()
    if recorded:
        name = here.name if recorded == "same" else ("fast" if here.precise else "precise")
        artifact.with_name(RECORD_FILE).write_text(json.dumps({"u8s8_mode": name, "reason": "test"}))
    note = get_engine("onnxruntime").load_note(artifact, "int8")
    assert note.warning is warning and here.line() in note.text
    assert ("rebuild it on this machine" in note.text) is warning
    assert get_engine("onnxruntime").load_note(artifact, "fp32") is None


@pytest.mark.integration
def test_served_int8_runs_in_the_mode_it_was_built_and_gated_in(server, small_repo):
    """The small repository's INT8 variant records this machine's mode, and the server's instance says it loaded in
    it: the mode the gate measured is the mode served."""
    variant = "efficientnet_lite0_onnxruntime_int8"
    record = json.loads((small_repo / variant / "1" / RECORD_FILE).read_text())
    assert record["u8s8_mode"] == u8s8_mode().name
    manifest = json.loads((small_repo / variant / "manifest.json").read_text())
    assert manifest["engine_build"]["u8s8_mode"] == record["u8s8_mode"]
    assert f"{variant}: {u8s8_mode().line()}, as it was gated" in server.log_file.read_text()
