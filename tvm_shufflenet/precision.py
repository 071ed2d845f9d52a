"""Numeric precisions a library can be built in, and which targets have the hardware for each.

=========  ============================  ===========================  =====================================
precision  stored (weights, activations)  computed in (convs, epilogue)  targets
=========  ============================  ===========================  =====================================
fp32       float32                        float32                        every target
bf16       bfloat16                       float32                        x86 CPUs with AVX-512 BF16 (Zen 4/5,
                                                                         Cooper Lake, Sapphire Rapids and later)
fp16       float16                        float16 (ARM), float32 (CUDA)  ARMv8.2-A CPUs (``+fullfp16``: Cortex-
                                                                         A55/A75/A76/A78, ``rpi5``, ``rk3588``,
                                                                         ``jetson-orin-cpu``); CUDA
=========  ============================  ===========================  =====================================

Whatever the precision, a library takes and returns float32: the cast to the stored type is fused into the
first kernel's reads and the cast back into the last kernel's output, so apps do not change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import UserError
from .schedules.knobs import BF16_CPUS
from .targets import TargetSpec

__all__ = ["Precision", "PrecisionError", "NAMES", "for_target", "supported"]

NAMES = ("fp32", "bf16", "fp16")
_STORAGE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class PrecisionError(UserError, ValueError):
    """A precision that does not exist, or that the target has no hardware for."""


@dataclass(frozen=True)
class Precision:
    """``name`` (fp32, bf16, fp16), the dtype tensors are stored in and the dtype convolutions compute in."""

    name: str
    storage: str
    acc: str

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"


_FP16_CPUS = ("cortex-a55", "cortex-a65", "cortex-a75", "cortex-a76", "cortex-a77", "cortex-a78", "cortex-a710",
              "cortex-a715", "cortex-a720", "cortex-a510", "cortex-a520", "cortex-x", "neoverse-n1", "neoverse-n2",
              "neoverse-v", "neoverse-e1", "apple-", "carmel")


def _attrs(spec: TargetSpec) -> tuple[str, str, str]:
    cpu_side = spec.host if spec.device == "cuda" and spec.host else spec.target
    mattr = " ".join(str(a) for a in spec.target.get("mattr") or [])
    return str(cpu_side.get("mtriple", "") or ""), str(spec.target.get("mcpu", "") or ""), mattr


def supported(spec: TargetSpec) -> list[str]:
    """The precisions ``spec`` has the hardware for."""
    out = ["fp32"]
    if spec.device == "cuda":
        return out + ["fp16"]
    triple, mcpu, mattr = _attrs(spec)
    x86 = triple.startswith("x86_64") or (not triple and spec.elf_machine == "x86_64")
    if x86 and (mcpu.startswith(BF16_CPUS) or "+avx512bf16" in mattr):
        out.append("bf16")
    if (triple.startswith("aarch64") or (not triple and spec.elf_machine == "aarch64")) and (
            mcpu.startswith(_FP16_CPUS) or "+fullfp16" in mattr):
        out.append("fp16")
    return out


def _why_not(spec: TargetSpec, name: str) -> str:
    if name == "bf16":
        return ("bf16 needs an x86 CPU with AVX-512 BF16 (Zen 4/5, Sapphire Rapids...): use --target host on one, "
                'or a JSON target such as {"kind": "llvm", "mcpu": "znver4"}')
    if spec.device == "cpu" and spec.elf_machine == "arm":
        return "fp16 arithmetic needs a 64-bit ARMv8.2-A board (rpi5, rk3588, jetson-orin-cpu)"
    return ("fp16 needs an ARMv8.2-A CPU (rpi5, rk3588, jetson-orin-cpu; the rpi4's Cortex-A72 is ARMv8.0) "
            'or CUDA, or a JSON target with "+fullfp16" in its mattr')


def for_target(name: str, spec: TargetSpec) -> tuple[Precision, TargetSpec]:
    """``(precision, target)`` for ``--precision name`` on ``spec``: the target gains what the precision
    needs (``+fullfp16`` for ARM fp16). :class:`PrecisionError` when the target lacks the hardware; no fallback."""
    if name not in NAMES:
        raise PrecisionError(f"unknown precision {name!r}: use one of {', '.join(NAMES)}")
    if name not in supported(spec):
        raise PrecisionError(f"target {spec.name} ({spec.key}) has no {name} hardware: {_why_not(spec, name)}")
    acc = "float16" if name == "fp16" and spec.device == "cpu" else "float32"
    prec = Precision(name, _STORAGE[name], acc)
    if name == "fp16" and spec.device == "cpu":
        mattr = list(spec.target.get("mattr") or [])
        if "+fullfp16" not in mattr:
            spec = replace(spec, target={**spec.target, "mattr": [*mattr, "+fullfp16"]})
    return prec, spec
