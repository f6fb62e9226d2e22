"""pytest configuration: cocotb test modules in tests/cocotb run inside a simulator only; the
board bitstream build is scheduled first."""

collect_ignore_glob = ["cocotb/*"]


def pytest_collection_modifyitems(config, items):
    """The board bitstream build (about 20 minutes on one core) goes first, so that under
    ``pytest -n`` one worker starts it at once and the others take the rest of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("bitstream") is None)
