"""Test suite; the Kimi simulator it runs is the top-level `kimi_sim` package."""
