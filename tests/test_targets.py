"""Targets: names, JSON, toolchains, and cross-compiled libraries of the right machine."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tvm_shufflenet import elf
from tvm_shufflenet.build import build
from tvm_shufflenet.targets import TargetError, resolve


def test_presets_and_triples():
    assert resolve("rpi4").target["mcpu"] == "cortex-a72" and resolve("rpi4").elf_machine == "aarch64"
    assert resolve("rpi5").key == "rpi5-cortex-a76"
    assert resolve("arm-linux-gnueabihf").target["mtriple"].startswith("armv7")
    assert resolve("x86_64-linux-gnu").target.get("mcpu") is None  # portable: no host CPU features
    assert resolve("host").target["mcpu"]  # this CPU
    cuda = resolve("cuda", cuda_arch="sm_90")
    assert cuda.key == "cuda-sm_90" and cuda.device == "cuda" and cuda.host["kind"] == "llvm"


def test_json_target():
    spec = resolve('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55"}')
    assert spec.elf_machine == "aarch64" and spec.cross_compiler == "aarch64-linux-gnu-gcc"
    assert spec.tvm_target().attrs["mcpu"] == "cortex-a55"


@pytest.mark.parametrize("bad", ["rpi44", "x86", "aarch64"])
def test_unknown_target_is_one_clear_line(bad):
    with pytest.raises(TargetError) as err:
        resolve(bad)
    assert "unknown target" in str(err.value) and "\n" not in str(err.value)


def test_bad_cuda_arch():
    with pytest.raises(TargetError, match="unknown CUDA arch"):
        resolve("cuda", cuda_arch="sm_12")


def test_missing_cross_compiler_names_the_package(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if "aarch64" in cmd else real_which(cmd, *a, **k))
    with pytest.raises(TargetError, match="apt-get install gcc-aarch64-linux-gnu"):
        build("mobilenet_v1_0_25", "rpi4", tmp_path / "m.so", input_size=64)
    assert not (tmp_path / "m.so").exists()


@pytest.mark.parametrize(
    "target, machine, bits, file_says",
    [
        ("aarch64-linux-gnu", "aarch64", 64, "ARM aarch64"),
        ("rpi5", "aarch64", 64, "ARM aarch64"),
        ("arm-linux-gnueabihf", "arm", 32, "ARM, EABI5"),
        ("x86_64-linux-gnu", "x86_64", 64, "x86-64"),
    ],
)
def test_cross_compiled_library_is_elf_of_the_target_machine(tmp_path, target, machine, bits, file_says):
    lib = tmp_path / "m.so"
    record = build("shufflenet_v1_g3_x0_5", target, lib, input_size=64)
    info, meta = elf.read_metadata(lib)
    assert (info.machine, info.bits) == (machine, bits)
    assert meta["target_key"] == record["target_key"] and meta["elf_machine"] == machine
    if shutil.which("file"):  # an independent reader of the header
        assert file_says in subprocess.run(["file", str(lib)], capture_output=True, text=True).stdout
    # no dependencies beyond libc/libm: the TVM runtime provides the rest at load time
    objdump = {"aarch64": "aarch64-linux-gnu-objdump", "arm": "arm-linux-gnueabihf-objdump"}.get(machine, "objdump")
    if shutil.which(objdump):
        dyn = subprocess.run([objdump, "-p", str(lib)], capture_output=True, text=True).stdout
        needed = [line.split()[-1] for line in dyn.splitlines() if "NEEDED" in line]
        assert set(needed) <= {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "libstdc++.so.6"}


def test_cuda_library_embeds_kernels(tmp_path):
    lib = tmp_path / "cuda.so"
    build("mobilenet_v1_0_25", "cuda", lib, cuda_arch="sm_80", input_size=64)
    info, meta = elf.read_metadata(lib)
    assert info.machine == "x86_64" and meta["target"]["device"] == "cuda" and meta["target_key"] == "cuda-sm_80"
    data = lib.read_bytes()
    # the device module travels inside the host library: CUDA C kernels for NVRTC and their launch names
    assert b"__global__" in data and b"blockIdx" in data
    assert data.count(b"_kernel") >= 10


def test_host_gains_the_features_its_llvm_name_hides(monkeypatch):
    """LLVM names the host CPU by its model number; a hypervisor may report another model's (a Sapphire Rapids
    seen as ``rocketlake``): the features /proc/cpuinfo lists and the named CPU lacks are added, so bf16 and AMX
    are offered where the hardware has them, and nothing is added for a name that has them already."""
    from tvm_shufflenet import precision, targets

    flags = {"avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx512_vnni"}
    monkeypatch.setattr(targets, "_cpu_flags", lambda: flags)
    extra = targets._missing_features("rocketlake")
    assert {"+avx512bf16", "+amx-tile", "+amx-bf16"} <= set(extra) and "+avx512vnni" not in extra
    assert targets._missing_features("sapphirerapids") == []
    spec = targets.TargetSpec("host", "x86_64-rocketlake", {"kind": "llvm", "mtriple": "x86_64-linux-gnu",
                                                           "mcpu": "rocketlake", "mattr": extra}, None, "x86_64", None, None)
    assert "bf16" in precision.supported(spec)
    monkeypatch.setattr(targets, "_cpu_flags", lambda: {"avx512f"})
    assert targets._missing_features("rocketlake") == []
