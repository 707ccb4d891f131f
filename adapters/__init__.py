"""Pure dialect adapters: wire bytes to canonical requests, canonical events to wire bytes."""
