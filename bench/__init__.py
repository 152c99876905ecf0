"""Benchmarks: speed and memory targets, each reported as a ratio against a baseline run in the same process."""
