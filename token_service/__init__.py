"""Owns Kimi accounts: kinds, storage, expiry reporting, refresh, leases and the one admin API.

Other packages import only `token_service.client`.
"""
