"""Synthetic agent-fleet telemetry for `tether demo`, benchmarks and tests."""
