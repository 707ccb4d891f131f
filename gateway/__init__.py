"""Public HTTP entry point: authenticates clients, enqueues jobs, relays replies as SSE or JSON."""
