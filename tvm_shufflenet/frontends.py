"""Import ONNX models into the same Relax form as the zoo's.

PyTorch exports ``x.chunk(2, dim=1)`` as ``Shape -> Gather -> Div -> Slice``, so stock TVM sees slices with
run-time bounds, gives the following ``concat`` unknown shapes and fails at VM codegen. With the input shape
fixed, every such ``Shape`` is a constant: :func:`fold_static_shapes` replaces them and evaluates the constant
subgraphs they feed, and the import then has static ``strided_slice`` ops like a zoo model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError

__all__ = ["OnnxImportError", "fold_static_shapes", "from_onnx", "onnx_input"]

_FOLD_LIMIT = 1 << 20  # elements: fold shape arithmetic and small tensors, never materialise big ones


class OnnxImportError(UserError, ValueError):
    """An ONNX file that cannot be read or imported."""


def _load(path: str | Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def onnx_input(model) -> tuple[str, list[int | None]]:
    """The name and shape (``None`` for a symbolic dim) of the graph's single real input."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxImportError(f"expected one image input, the model has {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _fix_input_shape(model, shape: Sequence[int]) -> None:
    name, dims = onnx_input(model)
    if len(dims) != len(shape) or any(d not in (None, s) for d, s in zip(dims, shape)):
        raise OnnxImportError(f"input {name!r} has shape {dims}, which does not admit {list(shape)}")
    inp = next(i for i in model.graph.input if i.name == name)
    for dim, size in zip(inp.type.tensor_type.shape.dim, shape):
        dim.ClearField("dim_param")
        dim.dim_value = int(size)


def fold_static_shapes(model, input_shape: Sequence[int] | None = None):
    """Return a copy of ``model`` with shape computations and constant subgraphs evaluated.

    ``input_shape`` fixes symbolic input dims (default: 1 for each). Nodes that only compute from constants
    and ``Shape`` of statically shaped tensors are replaced by initializers.
    """
    import onnx
    from onnx import numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _, dims = onnx_input(model)
    _fix_input_shape(model, input_shape or [d or 1 for d in dims])
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    static: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shape = vi.type.tensor_type.shape
        if vi.type.HasField("tensor_type") and all(d.HasField("dim_value") for d in shape.dim):
            static[vi.name] = [d.dim_value for d in shape.dim]

    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    kept, folded = [], 0
    for node in model.graph.node:
        value = None
        if node.op_type == "Constant":
            value = ReferenceEvaluator(_single(node)).run(None, {})[0]
        elif node.op_type == "Shape" and node.input[0] in static:
            attrs = {a.name: a.i for a in node.attribute}
            full = static[node.input[0]]
            value = np.array(full[attrs.get("start", 0) : attrs.get("end", len(full))], dtype=np.int64)
        elif node.input and all(i == "" or i in consts for i in node.input) and not node.op_type.startswith("Random"):
            if sum(consts[i].size for i in node.input if i) <= _FOLD_LIMIT:
                outs = ReferenceEvaluator(_single(node, consts)).run(None, {})
                if all(np.asarray(o).size <= _FOLD_LIMIT for o in outs):
                    for name, out in zip(node.output, outs):
                        consts[name] = np.asarray(out)
                    folded += 1
                    continue
        if value is not None and len(node.output) == 1:
            consts[node.output[0]] = np.asarray(value)
            folded += 1
            continue
        kept.append(node)

    used = {i for n in kept for i in n.input} | {o.name for o in model.graph.output}
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    inits = {i.name for i in model.graph.initializer}
    keep_inputs = [i for i in model.graph.input if i.name not in inits or i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(keep_inputs)
    return model


def _single(node, consts: dict[str, np.ndarray] | None = None):
    """A one-node model whose inputs are the given constants (for the reference evaluator)."""
    from onnx import helper, numpy_helper

    consts = consts or {}
    inits = [numpy_helper.from_array(consts[i], i) for i in node.input if i]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output]
    graph = helper.make_graph([node], "fold", [], outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def from_onnx(path: str | Path, input_shape: Sequence[int] | None = None, batch: int | None = None):
    """Import an ONNX file as an IRModule with ``main(x)`` and its weights bound as constants.

    Returns ``(mod, input_shape)``. Symbolic input dims become 1 unless ``input_shape`` is given;
    ``batch`` alone sets only the batch dimension.
    """
    from tvm.relax.frontend.onnx import from_onnx as _tvm_from_onnx

    model = _load(path)
    if input_shape is None and batch is not None:
        _, dims = onnx_input(model)
        input_shape = [batch, *(d or 1 for d in dims[1:])]
    model = fold_static_shapes(model, input_shape)
    name, dims = onnx_input(model)
    try:
        mod = _tvm_from_onnx(model, shape_dict={name: dims}, keep_params_in_input=False)
    except Exception as exc:
        raise OnnxImportError(f"{path}: TVM's ONNX frontend failed: {str(exc).splitlines()[-1]}") from None
    return mod, tuple(int(d) for d in dims)
