"""Schedule templates for tvm_shufflenet's kernels and per-target tuning settings.

Each template is a TE compute plus a schedule function whose tile sizes, vector widths and thread counts
are named knobs (:data:`conv2d.KNOBS`, :data:`pool.KNOBS`, :data:`dense.KNOBS`) with a range and a default
per target family (x86 AVX-512/AVX2, ARM NEON, CUDA). The compile pipeline instantiates them with defaults;
the tuner searches the same knobs.
"""

from .knobs import Decider, DefaultDecider, Family, FixedDecider, Knob, SampledDecider, family_of

__all__ = ["Decider", "DefaultDecider", "Family", "FixedDecider", "Knob", "SampledDecider", "family_of"]
