"""Auto-tuning: MetaSchedule searches the schedule templates' knobs (and, for kernels no template covers,
its own generic space) on this machine or on boards over RPC, and exports the best decisions as a tuning log.

- :mod:`.tasks`: the kernels of the project's compiled graph, deduplicated across models, weighted by calls.
- :mod:`.space`: a template as a MetaSchedule design space (one per structural variant), the knob mutator,
  and decoding a measured trace back into knob values.
- :mod:`.tuner`: the tuning run (builder, local or RPC runner, database in the work dir, progress, resume).
- :mod:`.export`: best record per kernel, checked against the untuned kernel, written to ``tuning_logs/``.
"""

from .tuner import TuneConfig, tune

__all__ = ["TuneConfig", "tune"]
