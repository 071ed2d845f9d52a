"""Target names -> TVM target dicts, cross compilers and the ELF machine a library must have.

``--target`` accepts ``host`` (this CPU: fast, not portable), a triple (``x86_64-linux-gnu``,
``aarch64-linux-gnu``, ``arm-linux-gnueabihf``: portable builds), a board preset (``rpi4``, ``rk3588``, ...),
``cuda`` (with an SM arch) or a raw TVM target as JSON.
"""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import dataclass, field
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
    return _cpu_target("host", f"{machine}-{cpu}", triple, cpu)


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


def _from_json(text: str) -> TargetSpec:
    try:
        target = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TargetError(f"target JSON does not parse: {exc}") from None
    if not isinstance(target, dict) or "kind" not in target:
        raise TargetError('a JSON target must be an object with a "kind", e.g. {"kind": "llvm", "mcpu": "cortex-a72"}')
    host = target.pop("host", None)
    triple = str((host or target).get("mtriple", ""))
    machine = next((m for m in ("aarch64", "x86_64") if triple.startswith(m)), None)
    if machine is None and triple.startswith("arm"):
        machine = "arm"
    machine = machine or host_machine()
    base = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm": "arm-linux-gnueabihf"}[machine]
    cpu = _cpu_target("json", "", base, None)
    key = f"{target['kind']}-{target.get('mcpu') or target.get('arch') or machine}"
    device = "cuda" if target["kind"] == "cuda" else "cpu"
    if device == "cuda" and host is None:
        host = {"kind": "llvm"}
    return TargetSpec("json", key, target, host, cpu.elf_machine, cpu.cross_compiler, cpu.debian_package, device)


def resolve(name: str, cuda_arch: str | None = None) -> TargetSpec:
    """Resolve a ``--target`` value; :class:`TargetError` lists close names for a typo."""
    text = name.strip()
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
