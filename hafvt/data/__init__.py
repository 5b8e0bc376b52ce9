"""Benchmark files, raw Amazon dumps, catalogues and the demo scenario."""
from hafvt.data.c2dsr import FormatError, Scenario, Sequences, data_hash, read_scenario, write_scenario  # noqa: F401
