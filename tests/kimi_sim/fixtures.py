"""pytest fixtures that run the Kimi simulator as a real HTTP server (filled in with the simulator)."""
