"""Gateware (Amaranth): ingress, ITCH parser, book, quoter, egress, control. Imports nothing
from ``host`` or ``sim``."""
