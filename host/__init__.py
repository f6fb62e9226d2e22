"""Host side: codecs, transports, device API, latency, instruments and the ``t2q`` CLI."""
