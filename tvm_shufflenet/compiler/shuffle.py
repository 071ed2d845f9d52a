"""Pass: fold channel shuffles, splits, slices and concats into the convolution kernels next to them.

Every channel-moving op on an NCHW tensor (``split``/``strided_slice`` on axis 1, ``concat`` on axis 1, and
the shuffle ``reshape -> permute_dims(0, 2, 1, 3, 4) -> reshape``) only says where each channel comes from.
The pass tracks that as a *view*: for every logical channel, the real tensor and channel it comes from.

* A kernel whose input is a view of one tensor reads that tensor through a :class:`ChannelMap` (a slice is an
  offset, a shuffle an affine map with ``%`` and ``//``), so the view costs nothing. This makes ShuffleNet
  V1's shuffle before the depthwise conv vanish, and every ShuffleNet V2 split.
* A view of several tensors that something needs as one tensor (ShuffleNet V2's ``concat + shuffle``,
  V1's stride-2 ``concat``) is written by the kernel that produces one of its parts: its rows go straight to
  their shuffled positions and the other parts are copied beside them in the same kernel (a
  :class:`Placement`). No kernel is left whose only job is to move channels.

Views the pass cannot express (irregular maps, sources that are not our kernels) keep the stock ops.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any


from ..schedules.conv2d import ChannelMap, Passthrough, Placement
from .fuse_conv import add_conv_call, conv_call
from .graph import DROP, KEEP, Graph, op_name, prim_of, rebuild, shape_of

__all__ = ["fold_channel_shuffle", "FoldChannelShuffle"]

View = list[tuple[Any, int]]  # per logical channel: (source var, channel)

_CHANNEL_OPS = ("relax.split", "relax.strided_slice", "relax.concat", "relax.reshape", "relax.permute_dims")


def _ints(expr: Any) -> list[int] | None:
    fields = getattr(expr, "fields", None)
    if fields is None:
        vals = getattr(expr, "values", None)
        return None if vals is None else [int(v) for v in vals]
    out = []
    for f in fields:
        v = prim_of(f)
        if v is None:
            return None
        out.append(int(v))
    return out


class _Analysis:
    """Views of every variable, computed in binding order."""

    def __init__(self, graph: Graph):
        self.g = graph
        self.views: dict[Any, View] = {}
        self.tuples: dict[Any, list[View]] = {}

    def view(self, expr: Any) -> View | None:
        if expr in self.views:
            return self.views[expr]
        shape = shape_of(expr)
        if shape is None or len(shape) != 4:
            return None
        return [(expr, c) for c in range(shape[1])]

    def step(self, i: int) -> None:
        b = self.g.bindings[i]
        v, name = b.value, op_name(b.value)
        if type(v).__name__ == "TupleGetItem" and v.tuple_value in self.tuples:
            self.views[b.var] = self.tuples[v.tuple_value][v.index]
            return
        if name == "relax.split" and int(v.attrs.axis) == 1:
            src = self.view(v.args[0])
            outs = b.var.ty.fields if hasattr(b.var.ty, "fields") else None
            if src is None or outs is None:
                return
            pieces, start = [], 0
            for o in outs:
                n = int(o.shape.values[1])
                pieces.append(src[start:start + n])
                start += n
            self.tuples[b.var] = pieces
        elif name == "relax.strided_slice":
            axes, begin, end, strides = (_ints(a) for a in v.args[1:5])
            src = self.view(v.args[0])
            if src is None or axes != [1] or begin is None or end is None or (strides or [1]) != [1]:
                return
            self.views[b.var] = src[begin[0]:min(end[0], len(src))]
        elif name == "relax.concat" and int(v.attrs.axis) == 1:
            parts = [self.view(f) for f in v.args[0].fields]
            if all(p is not None for p in parts):
                self.views[b.var] = [ch for p in parts for ch in p]
        elif name == "relax.reshape":
            self._shuffle(b)

    def _shuffle(self, b: Any) -> None:
        """``reshape(permute_dims(reshape(x, (N, g, C/g, H, W)), (0, 2, 1, 3, 4)), (N, C, H, W))``."""
        out = shape_of(b.var)
        perm = self.g.value(b.value.args[0])
        if out is None or len(out) != 4 or op_name(perm) != "relax.permute_dims":
            return
        if [int(a) for a in perm.attrs.axes] != [0, 2, 1, 3, 4]:
            return
        first = self.g.value(perm.args[0])
        if op_name(first) != "relax.reshape":
            return
        x = first.args[0]
        five = shape_of(perm.args[0])
        src = self.view(x)
        if src is None or five is None or len(five) != 5 or shape_of(x) != out:
            return
        g, cg = five[1], five[2]
        if g * cg != out[1]:
            return
        # output channel a*g + k comes from input channel k*cg + a
        self.views[b.var] = [src[(c % g) * cg + c // g] for c in range(out[1])]


def _progression(positions: list[int]) -> tuple[int, int] | None:
    if len(positions) == 1:
        return 1, positions[0]
    step = positions[1] - positions[0]
    if step <= 0 or any(positions[k + 1] - positions[k] != step for k in range(len(positions) - 1)):
        return None
    return step, positions[0]


def _sources(view: View) -> list[Any]:
    seen: list[Any] = []
    for src, _ in view:
        if not any(src.same_as(s) for s in seen):
            seen.append(src)
    return seen


def fold_channel_shuffle(mod: Any) -> Any:
    """Return ``mod`` with channel views folded into the kernels that read and write them."""
    from tvm import relax

    graph = Graph(mod["main"])
    if not graph.supported:
        return mod
    an = _Analysis(graph)
    calls: dict[int, tuple[Any, list[Any]]] = {}  # conv index -> (spec, args) after input folding
    materialize: dict[int, int] = {}  # view index -> producer conv index
    dropped: set[int] = set()

    def channel_consumer(j: int) -> bool:
        return j < len(graph.bindings) and (
            op_name(graph.bindings[j].value) in _CHANNEL_OPS or type(graph.bindings[j].value).__name__ == "TupleGetItem"
        )

    for i, b in enumerate(graph.bindings):
        spec = conv_call(mod, b.value)
        if spec is not None:
            args = list(b.value.args[1].fields)
            view = an.views.get(args[0])
            if view is not None and len(_sources(view)) == 1:
                src = view[0][0]
                cmap = ChannelMap.fit([c for _, c in view])
                base = spec.in_map or ChannelMap.identity(spec.cin)
                if cmap is not None and base.is_identity:
                    spec = spec.with_(in_map=cmap, cin_src=shape_of(src)[1])
                    args[0] = src
            calls[i] = (spec, args)
            continue
        an.step(i)
        view = an.views.get(b.var)
        if view is None:
            continue
        srcs = _sources(view)
        trivial = len(srcs) == 1 and [c for _, c in view] == list(range(shape_of(srcs[0])[1])) and shape_of(srcs[0]) == shape_of(b.var)
        users = graph.users.get(b.var, [])
        needed = any(not channel_consumer(j) for j in users) or op_name(b.value) == "relax.reshape" and any(
            op_name(graph.bindings[j].value) in ("relax.split", "relax.strided_slice") for j in users if j < len(graph.bindings))
        if trivial or len(srcs) < 2 or not needed:
            continue
        plan = _plan_materialize(mod, graph, calls, view, srcs, dropped)
        if plan is None:
            an.views.pop(b.var, None)
            continue
        k, spec, args = plan
        at = i
        users = graph.users.get(b.var, [])
        if len(users) == 1 and users[0] < len(graph.bindings) and op_name(graph.bindings[users[0]].value) == "relax.nn.relu":
            # relu(concat(...)): the kernel that writes the concat applies the ReLU to every channel it writes
            spec = spec.with_(placement=replace(spec.placement, act="relu"))
            at = users[0]
            dropped.add(i)
        calls[k] = (spec, args)
        materialize[at] = k
        dropped.add(k)
        an.views.pop(b.var, None)  # from here on it is a real tensor

    def rewrite(g: Graph, i: int, bb: Any, new: Any) -> Any:
        if i in materialize:
            spec, args = calls[materialize[i]]
            return add_conv_call(bb, spec, [new(a) for a in args])
        if i in dropped:
            return DROP
        if i in calls:
            spec, args = calls[i]
            old = g.bindings[i].value.args[1].fields
            if args[0].same_as(old[0]):
                return KEEP
            return add_conv_call(bb, spec, [new(a) for a in args])
        return KEEP

    out = rebuild(mod, rewrite)
    return relax.transform.DeadCodeElimination()(out)


def _plan_materialize(mod: Any, graph: Graph, calls: dict, view: View, srcs: list[Any], dropped: set[int]):
    """A producer kernel that can write the whole ``view``: ``(its index, new spec, new args)`` or None."""
    for src in srcs:
        k = graph.producer.get(src)
        if k is None or k not in calls or k in dropped or not graph.single_use(src):
            continue
        spec, args = calls[k]
        if spec.placement is not None or spec.pool:  # a kernel with a fused pool writes its pooled map as is
            continue
        rows = [(pos, ch) for pos, (s, ch) in enumerate(view) if s.same_as(src)]
        if sorted(ch for _, ch in rows) != list(range(spec.cout)):
            continue
        prog = _progression([pos for pos, _ in rows])
        order = [ch for _, ch in rows]
        if prog is None or (order != list(range(spec.cout)) and spec.residual):
            continue
        passes, extra, ok = [], [], True
        for other in srcs:
            if other.same_as(src):
                continue
            seg = [(pos, ch) for pos, (s, ch) in enumerate(view) if s.same_as(other)]
            p = _progression([pos for pos, _ in seg])
            cmap = ChannelMap.fit([ch for _, ch in seg])
            if p is None or cmap is None:
                ok = False
                break
            passes.append(Passthrough(p[0], p[1], len(seg), shape_of(other)[1], cmap))
            extra.append(other)
        if not ok:
            continue
        new_args = list(args)
        if order != list(range(spec.cout)):  # the producer's rows arrive permuted: permute its weights instead
            from .graph import const_of
            from tvm import relax

            w, bias = const_of(args[1]), const_of(args[2])
            new_args[1], new_args[2] = relax.const(w[order]), relax.const(bias[order])
        placement = Placement(len(view), prog[0], prog[1], tuple(passes))
        return k, spec.with_(placement=placement), new_args + extra
    return None


def FoldChannelShuffle():  # noqa: N802
    """``fold_channel_shuffle`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: fold_channel_shuffle(mod), opt_level=0, name="FoldChannelShuffle")
