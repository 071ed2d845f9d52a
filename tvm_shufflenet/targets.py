"""Target names -> TVM target dicts, cross compilers and the ELF machine a library must have.

``--target`` accepts ``host`` (this CPU: fast, not portable), a triple (``x86_64-linux-gnu``,
``aarch64-linux-gnu``, ``arm-linux-gnueabihf``: portable builds), a board preset (``rpi4``, ``rk3588``, ...),
``cuda`` (with an SM arch) or a raw TVM target as JSON.
"""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import dataclass, field, replace
from typing import Any

from .elf import host_machine
from .errors import UserError

__all__ = ["TargetSpec", "TargetError", "resolve", "names", "BOARDS"]


class TargetError(UserError, ValueError):
    """An unknown target, or one whose toolchain is missing here."""


@dataclass(frozen=True)
class _Triple:
    llvm_triple: str
    elf_machine: str
    cross_compiler: str | None  # gcc driver that links a shared object for this triple
    debian_package: str | None
    attrs: dict[str, Any] = field(default_factory=dict)


_TRIPLES = {
    "x86_64-linux-gnu": _Triple("x86_64-linux-gnu", "x86_64", "gcc", "gcc"),
    "aarch64-linux-gnu": _Triple("aarch64-linux-gnu", "aarch64", "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", {"mattr": ["+neon"]}),
    "arm-linux-gnueabihf": _Triple(
        "armv7a-linux-gnueabihf",
        "arm",
        "arm-linux-gnueabihf-gcc",
        "gcc-arm-linux-gnueabihf",
        {"mattr": ["+neon", "+vfp4"], "mfloat-abi": "hard"},
    ),
}

# board: (triple, mcpu, target key). Keys name the hardware class, not a machine.
BOARDS: dict[str, tuple[str, str, str]] = {
    "rpi3": ("aarch64-linux-gnu", "cortex-a53", "rpi3-cortex-a53"),
    "rpi4": ("aarch64-linux-gnu", "cortex-a72", "rpi4-cortex-a72"),
    "rpi5": ("aarch64-linux-gnu", "cortex-a76", "rpi5-cortex-a76"),
    "rk3588": ("aarch64-linux-gnu", "cortex-a76", "rk3588-cortex-a76"),
    "jetson-nano-cpu": ("aarch64-linux-gnu", "cortex-a57", "jetson-nano-cortex-a57"),
    "jetson-orin-cpu": ("aarch64-linux-gnu", "cortex-a78ae", "jetson-orin-cortex-a78ae"),
    "rpi4-32": ("arm-linux-gnueabihf", "cortex-a72", "rpi4-armv7-cortex-a72"),
}

CUDA_ARCHS = ("sm_53", "sm_62", "sm_72", "sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_120")


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target.

    Attributes:
        name: what the user asked for (``rpi4``, ``host``, ``cuda``...).
        key: the hardware class, used to pick tuning logs (``rpi4-cortex-a72``, ``cuda-sm_90``).
        target: the TVM target dict (the device's, for CUDA).
        host: the host-side target dict for CUDA, else ``None``.
        elf_machine: ``uname -m`` of machines that can load the library (``aarch64``, ``x86_64``, ``arm``).
        cross_compiler: the gcc driver that links the library (``None``: TVM's default for this machine).
        debian_package: the package that provides ``cross_compiler``.
        device: ``cpu`` or ``cuda``: where the library runs.
    """

    name: str
    key: str
    target: dict[str, Any]
    host: dict[str, Any] | None
    elf_machine: str
    cross_compiler: str | None
    debian_package: str | None
    device: str = "cpu"

    def tvm_target(self):
        """The ``tvm.target.Target`` (imports the compiler)."""
        import tvm

        return tvm.target.Target(self.target, host=self.host) if self.host else tvm.target.Target(self.target)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable record of this target (for library metadata)."""
        return {"name": self.name, "key": self.key, "target": self.target, "host": self.host, "device": self.device}

    def check_toolchain(self) -> None:
        """Raise :class:`TargetError` naming the Debian package when the cross compiler is not installed."""
        if self.cross_compiler and not shutil.which(self.cross_compiler):
            raise TargetError(
                f"target {self.name} needs the cross compiler {self.cross_compiler}: "
                f"apt-get install {self.debian_package}"
            )


def names() -> list[str]:
    """Every named target (boards, triples and the special names)."""
    return ["host", *_TRIPLES, *BOARDS, "cuda"]


def _cpu_target(name: str, key: str, triple: str, mcpu: str | None, native: bool = False) -> TargetSpec:
    t = _TRIPLES[triple]
    target: dict[str, Any] = {"kind": "llvm", "mtriple": t.llvm_triple, **t.attrs}
    if mcpu:
        target["mcpu"] = mcpu
    # On a machine of the same architecture TVM's default linker (the system compiler) is the right one.
    same_arch = t.elf_machine == host_machine()
    compiler = None if same_arch else t.cross_compiler
    return TargetSpec(name, key, target, None, t.elf_machine, compiler, t.debian_package if compiler else None)


def _host() -> TargetSpec:
    from tvm.target import codegen  # the only way to ask LLVM what this CPU is

    cpu = codegen.llvm_get_system_cpu()
    machine = host_machine()
    triple = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf"}.get(machine)
    if triple is None:
        raise TargetError(f"--target host is not supported on {machine}; pass a TVM target as JSON")
    spec = _cpu_target("host", f"{machine}-{cpu}", triple, cpu)
    extra = _missing_features(cpu) if machine == "x86_64" else []
    return replace(spec, target={**spec.target, "mattr": extra}) if extra else spec


# /proc/cpuinfo flag -> LLVM feature, for the features our templates use or that decide a precision.
_X86_FLAGS = {"avx512_bf16": "avx512bf16", "avx512_fp16": "avx512fp16", "avx512_vnni": "avx512vnni",
              "amx_tile": "amx-tile", "amx_bf16": "amx-bf16", "amx_int8": "amx-int8"}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _missing_features(cpu: str) -> list[str]:
    """``+feature`` for what this CPU has but LLVM's name for it lacks.

    LLVM names the host CPU by its family and model numbers; a hypervisor may report another model's (a Sapphire
    Rapids seen here as ``rocketlake``), and the named CPU's features then hide the real ones (AVX-512 BF16)."""
    import tvm
    from tvm.target import codegen

    flags = _cpu_flags()
    present = [feat for flag, feat in _X86_FLAGS.items() if flag in flags]
    if not present:
        return []
    named = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": cpu})
    return [f"+{feat}" for feat in present if not codegen.llvm_cpu_has_features(feat, named)]


def _cuda(arch: str | None, host_triple: str = "x86_64-linux-gnu") -> TargetSpec:
    arch = arch or "sm_80"
    if arch not in CUDA_ARCHS:
        raise TargetError(f"unknown CUDA arch {arch!r}; use one of {', '.join(CUDA_ARCHS)}")
    host = _cpu_target("cuda-host", "", host_triple, None)
    return TargetSpec(
        name="cuda",
        key=f"cuda-{arch}",
        target={"kind": "cuda", "arch": arch},
        host=host.target,
        elf_machine=host.elf_machine,
        cross_compiler=host.cross_compiler,
        debian_package=host.debian_package,
        device="cuda",
    )


_KINDS = ("llvm", "cuda")
_ELF_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "arm": "arm", "armv7a": "arm", "armv7": "arm", "thumbv7": "arm"}


def _triple_machine(triple: str) -> tuple[str, str]:
    """``mtriple`` -> (ELF machine, Debian triple): ``armv7a-linux-gnueabihf`` -> (arm, arm-linux-gnueabihf)."""
    arch = triple.split("-", 1)[0]
    machine = _ELF_ARCH.get(arch, "arm" if arch.startswith(("armv", "thumbv")) else arch)
    rest = triple.split("-", 1)[1] if "-" in triple else "linux-gnu"
    rest = rest.replace("unknown-", "").replace("pc-", "")
    return machine, f"{'arm' if machine == 'arm' else arch}-{rest}"


def _check_llvm(target: dict[str, Any]) -> None:
    """Refuse an ``mtriple`` or ``mcpu`` this LLVM does not know, before LLVM prints pages and builds anyway."""
    import tvm
    from tvm.target import codegen

    triple = str(target.get("mtriple") or codegen.llvm_get_system_triple())
    arch = triple.split("-", 1)[0]
    known_archs = codegen.llvm_get_targets()
    if not any(arch == a or (a in ("arm", "thumb") and arch.startswith(a)) for a in known_archs):
        raise TargetError(f"LLVM does not know the architecture of mtriple {triple!r}: use one of {', '.join(known_archs)}")
    mcpu = target.get("mcpu")
    if mcpu:
        plain = {k: v for k, v in target.items() if k in ("kind", "mtriple")}
        cpus = list(codegen.llvm_get_cpu_archlist(tvm.target.Target(plain)))
        if cpus and mcpu not in cpus:
            close = difflib.get_close_matches(str(mcpu), cpus, n=4, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise TargetError(f"unknown mcpu {mcpu!r} for {triple}: {hint}LLVM knows {len(cpus)} CPUs for it, "
                              f"e.g. {', '.join(cpus[:6])}")


def _from_json(text: str) -> TargetSpec:
    try:
        target = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TargetError(f"target JSON does not parse: {exc}") from None
    if not isinstance(target, dict) or "kind" not in target:
        raise TargetError('a JSON target must be an object with a "kind", e.g. {"kind": "llvm", "mcpu": "cortex-a72"}')
    if target["kind"] not in _KINDS:
        raise TargetError(f"unknown target kind {target['kind']!r}: use \"llvm\" (CPUs) or \"cuda\"")
    host = target.pop("host", None)
    if host is not None and not (isinstance(host, dict) and host.get("kind") == "llvm"):
        raise TargetError('"host" must be an llvm target object, e.g. {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}')
    cpu_side = host or target
    _check_llvm(cpu_side) if target["kind"] == "cuda" else _check_llvm(target)
    triple = str(cpu_side.get("mtriple", ""))
    if triple:
        machine, debian_triple = _triple_machine(triple)
    else:
        machine = host_machine()
        debian_triple = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf"}.get(machine, f"{machine}-linux-gnu")
    if debian_triple in _TRIPLES:
        cpu = _cpu_target("json", "", debian_triple, None)
        compiler, package = cpu.cross_compiler, cpu.debian_package
    else:  # a triple without a preset (riscv64, ...): the Debian cross gcc of that name, if installed
        compiler, package = (None, None) if machine == host_machine() else (f"{debian_triple}-gcc", f"gcc-{debian_triple}")
    key = f"{target['kind']}-{target.get('mcpu') or target.get('arch') or machine}"
    device = "cuda" if target["kind"] == "cuda" else "cpu"
    if device == "cuda" and host is None:
        host = {"kind": "llvm"}
    return TargetSpec("json", key, target, host, machine, compiler, package, device)


def resolve(name: str, cuda_arch: str | None = None) -> TargetSpec:
    """Resolve a ``--target`` value; :class:`TargetError` lists close names for a typo."""
    text = name.strip()
    is_cuda = text == "cuda" or text.startswith("cuda-sm_") or (text.startswith("{") and '"cuda"' in text)
    if cuda_arch and not is_cuda:
        raise TargetError(f"--cuda-arch {cuda_arch} is for --target cuda; target {name!r} is a CPU: drop --cuda-arch")
    if text.startswith("{"):
        return _from_json(text)
    if text == "host":
        return _host()
    if text == "cuda" or text.startswith("cuda-sm_"):
        return _cuda(cuda_arch or (text[5:] if text != "cuda" else None))
    if text in _TRIPLES:
        machine = _TRIPLES[text].elf_machine
        return _cpu_target(text, machine if machine != "arm" else "armv7", text, None)
    if text in BOARDS:
        triple, mcpu, key = BOARDS[text]
        return _cpu_target(text, key, triple, mcpu)
    close = difflib.get_close_matches(text, names(), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise TargetError(f"unknown target {name!r}: {hint}use one of {', '.join(names())}, or a TVM target as JSON")
