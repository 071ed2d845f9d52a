"""Benchmarking: local and remote timing, records on disk, reports and plots."""
