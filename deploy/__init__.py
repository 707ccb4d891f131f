"""Deployment helpers: the local runner, Prometheus, Grafana and Docker files."""
