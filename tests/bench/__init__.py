"""`make bench`: streaming chats straight against the Kimi simulator and through the gateway, side by side.

A program, not a test (STYLE.md §14). One invocation starts every service as its own subprocess (Redis, the
simulator, the token service, the gateway, the workers), mints an account pool, drives both paths at each
concurrency level with the same chunk count and pacing, prints a table and writes it as JSON.

    python -m tests.bench [--levels 1,16,64,256] [--duration 6] [--chunks 16] [--chunk-delay-ms 5]

Modules: `services` (subprocesses, readiness, RSS and CPU), `accounts` (mint and register the pool),
`load` (the load generator and what one request measures), `report` (percentiles, targets, table, JSON).
"""
