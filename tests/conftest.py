"""pytest configuration: cocotb test modules in tests/cocotb run inside a simulator only."""

collect_ignore_glob = ["cocotb/*"]
