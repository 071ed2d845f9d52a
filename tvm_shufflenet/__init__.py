"""tvm_shufflenet: ShuffleNet V1/V2 and MobileNet V1/V2/V3 in TVM Relax, compiled for CPUs, ARM boards and CUDA.

``tvm_shufflenet.load(path)`` needs only the TVM runtime; the zoo lives in ``tvm_shufflenet.models``.
"""

__version__ = "0.1.0"


def load(path, device=None):
    """Load a library built by ``tvm-shufflenet compile``; see :func:`tvm_shufflenet.runtime.load`."""
    from .runtime import load as _load

    return _load(path, device=device)


__all__ = ["load", "__version__"]
