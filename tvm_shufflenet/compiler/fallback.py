"""Pass: a plain CPU schedule for the kernels no template covers (stock-legalized, stock-fused ops).

Unscheduled TIR runs on one thread without vectors. For each block this inlines what it can, spreads the
outer spatial loops over threads and vectorizes a contiguous inner loop. Anything that does not fit is left
as it was: correct, just slower. CUDA uses TVM's dlight rules instead (they bind threads, which is required).
"""

from __future__ import annotations

from typing import Any

from ..schedules.conv2d import vector_width

__all__ = ["schedule_fallback", "ScheduleFallback"]


def _schedule(func: Any, lanes: int) -> Any:
    from tvm.s_tir import Schedule

    sch = Schedule(func)
    root = sch.get_sblock(sch.mod["main"].body.block.name_hint) if hasattr(sch.mod["main"].body, "block") else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for blk in blocks[:-1]:
        try:
            sch.compute_inline(blk)
        except Exception:  # noqa: BLE001 - not inlinable (reduction, multiple consumers): keep it
            pass
    for blk in sch.get_child_blocks(root):
        try:
            _parallel_vectorize(sch, blk, lanes)
        except Exception:  # noqa: BLE001 - leave this block serial
            pass
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _parallel_vectorize(sch: Any, blk: Any, lanes: int) -> None:
    loops = sch.get_loops(blk)
    iters = sch.get(blk).iter_vars
    kinds = [int(iv.iter_type) for iv in iters]  # 0: spatial, 2: reduction
    if not loops:
        return
    if len(loops) != len(kinds):
        return
    if kinds and all(k == 0 for k in kinds):
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        ext = int(sch.get(fused).extent)
        vec = vector_width(ext, lanes)  # a divisor: no predicated tail
        if ext >= 4 * lanes and vec > 1:
            outer, inner = sch.split(fused, [None, vec])
            sch.vectorize(inner)
            if ext >= 64 * lanes:
                sch.parallel(outer)
        return
    # reduction: threads over the leading spatial loops
    lead = []
    for lp, k in zip(loops, kinds):
        if k != 0:
            break
        lead.append(lp)
    if lead:
        fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
        if int(sch.get(fused).extent) >= 8:
            sch.parallel(fused)


def schedule_one(func: Any, target: Any, records: Any = None) -> Any:
    """``func`` scheduled: by its tuned trace when the tuning log has one, else the plain CPU schedule."""
    from ..schedules.knobs import family_of

    trace = records.trace_for_fallback(func) if records is not None and hasattr(records, "trace_for_fallback") else None
    if trace is not None:
        from .tuning import apply_trace_json

        try:
            return apply_trace_json(func, trace).with_attr("tirx.is_scheduled", True)
        except Exception:  # noqa: BLE001 - a trace from another TVM version: the plain schedule
            pass
    return _schedule(func, family_of(target).vector_lanes)


def schedule_fallback(mod: Any, target: Any, records: Any = None) -> Any:
    """Return ``mod`` with every unscheduled PrimFunc given its tuned trace or the plain CPU schedule."""
    from tvm import tirx

    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and "tirx.is_scheduled" in func.attrs.keys():
            continue
        try:
            updates[gv] = schedule_one(func, target, records)
        except Exception:  # noqa: BLE001 - unschedulable: keep the stock code
            continue
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def ScheduleFallback(target: Any, records: Any = None):  # noqa: N802
    """``schedule_fallback`` as a TVM module pass."""
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: schedule_fallback(mod, target, records), opt_level=0,
                                     name="ScheduleFallback")
