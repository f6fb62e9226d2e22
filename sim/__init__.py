"""Simulation: pure-Python reference models, feed generator, cocotb harness, device twin."""
