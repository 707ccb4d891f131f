"""Consumes jobs from Redis, leases an account, talks to Kimi, publishes canonical events."""
