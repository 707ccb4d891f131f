"""Owns Kimi accounts: storage, expiry reporting, refresh, leases and the admin token API."""
