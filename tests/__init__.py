"""Test suite; the Kimi simulator lives in tests/kimi_sim."""
