"""Pass: give tensors that only 1x1 convs read a channel count of whole vectors, padding with zero channels.

MobileNet V2's 24-channel tensors (V3's 24 and 40) are multiples of 8 but not of 16, so on AVX-512 their whole
channel-blocked region ran 8-lane blocks (``lower._region_blocks``), and in bf16 its dot products ran 256 bits
wide: the stages at 112x112 and 56x56 took twice OpenVINO's time per layer. Padding the tensor instead (the
producing 1x1 conv writes zero channels: zero weight rows and bias, an activation with f(0) = 0; each reading 1x1
conv gets zero weight columns for them) changes no output value and lets the region run 16-lane blocks. It
costs multiply-adds on zeros (24 -> 32 channels: a third more in the convs at that tensor), so a tensor is
padded only where every reader is a plain 1x1 conv, or the residual of a conv whose output is padded too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fuse_conv import add_conv_call, conv_call
from .graph import KEEP, Graph, const_of, rebuild

__all__ = ["pad_channels", "PadChannels", "padded_tensors"]

_ZERO_AT_ZERO = (None, "relu", "relu6", "hswish")  # activations that keep a zero channel zero


def _plain_pointwise(spec: Any) -> bool:
    return (spec is not None and spec.kind == "pointwise" and spec.groups == 1 and spec.placement is None
            and (spec.in_map is None or spec.in_map.is_identity) and spec.cin_src == spec.cin and not spec.in_scale
            and not spec.pool and not spec.block)


def _fields(graph: Graph, i: int) -> list[Any]:
    return list(graph.bindings[i].value.args[1].fields)


def padded_tensors(mod: Any, multiple: int) -> set[int]:
    """Bindings of the conv outputs :func:`pad_channels` pads to a multiple of ``multiple`` channels."""
    graph = Graph(mod["main"])
    if not graph.supported:
        return set()
    specs = {i: conv_call(mod, b.value) for i, b in enumerate(graph.bindings)}
    padded = {i for i, s in specs.items() if _plain_pointwise(s) and s.cout % multiple and s.cout % 2 == 0
              and s.act in _ZERO_AT_ZERO and s.post_act in _ZERO_AT_ZERO}
    changed = True
    while changed:  # drop a tensor with a reader that cannot take zero channels, until none is left
        changed = False
        for i in sorted(padded):
            var, ok = graph.bindings[i].var, True
            if specs[i].residual and graph.producer.get(_fields(graph, i)[-1]) not in padded:
                ok = False
            for u in graph.users.get(var, []):
                if not ok or u >= len(graph.bindings) or not _plain_pointwise(specs.get(u)):
                    ok = False
                    break
                fields = _fields(graph, u)
                for k, f in enumerate(fields):  # as data, or as the residual of a conv padded too
                    if f.same_as(var) and not (k == 0 or (specs[u].residual and k == len(fields) - 1 and u in padded)):
                        ok = False
            if not ok:
                padded.discard(i)
                changed = True
    return padded


def pad_channels(mod: Any, multiple: int) -> Any:
    """Return ``mod`` with :func:`padded_tensors` padded with zero channels (module docstring)."""
    from tvm import relax

    padded = padded_tensors(mod, multiple)
    if not padded:
        return mod
    up = lambda c: -(-c // multiple) * multiple  # noqa: E731

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        spec = conv_call(mod, g.bindings[i].value)
        if spec is None:
            return KEEP
        fields = _fields(g, i)
        wide_in = g.producer.get(fields[0]) in padded
        if i not in padded and not wide_in:
            return KEEP
        w = const_of(fields[1])
        cin, cout = (up(spec.cin) if wide_in else spec.cin), (up(spec.cout) if i in padded else spec.cout)
        wp = np.zeros((cout, cin, *w.shape[2:]), w.dtype)
        wp[: w.shape[0], : w.shape[1]] = w
        args = [new(fields[0]), relax.const(wp)]
        if spec.bias:
            bias = const_of(fields[2])
            args.append(relax.const(np.concatenate([bias, np.zeros(cout - bias.size, bias.dtype)])))
        args += [new(f) for f in fields[3 if spec.bias else 2:]]
        return add_conv_call(bb, spec.with_(cin=cin, cin_src=cin, cout=cout), args)

    return relax.transform.DeadCodeElimination()(rebuild(mod, rewrite))


def PadChannels(multiple: int):  # noqa: N802
    """``pad_channels`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: pad_channels(mod, multiple), opt_level=0,
                                     name="PadChannels")
