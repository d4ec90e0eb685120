"""Operator commands behind `python -m app`: the process supervisor of `run` and the counters tools."""
