"""Comparisons against other engines (``compare.py``), installed as ``tvm_shufflenet.benchmarks``."""
