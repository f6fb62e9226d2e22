"""Board tops: platform, clocks, PHY/MAC glue and the core, one module per board."""
