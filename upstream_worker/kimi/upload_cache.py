"""One upload per file per account: (lane, account, sha256) → the Kimi file, in Redis with a TTL.

A conversation resends its whole history every turn, images and documents included; the second turn finds the
file the first one uploaded. Lanes are apart because REST and Connect keep files in different stores (REST
ids are xids, Connect ids UUIDs). Entries expire after `keys.UPLOAD_CACHE_TTL_S` from their upload and are not
renewed by a hit, so a file Kimi may have dropped meanwhile is uploaded again at most that late. `forget`
drops entries a turn found stale (Kimi no longer knows the id).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from shared import keys
from upstream_worker.kimi.files import KimiFile

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KimiFile)


class UploadCache:
    def __init__(self, redis: aioredis.Redis, ttl_s: int = keys.UPLOAD_CACHE_TTL_S) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def get_many(self, lane: str, account_id: str, sha256s: Sequence[str]) -> dict[str, KimiFile]:
        """The files this account already holds on this lane, by sha256 (one MGET: one slot per account)."""
        if not sha256s:
            return {}
        names = [keys.upload_cache_key(lane, account_id, sha256) for sha256 in sha256s]
        found: dict[str, KimiFile] = {}
        for sha256, raw in zip(sha256s, await self._redis.mget(names), strict=True):
            if raw is None:
                continue
            try:
                found[sha256] = _decoder.decode(raw)
            except msgspec.DecodeError:
                continue  # written by another version: upload again
        return found

    async def put(self, lane: str, account_id: str, sha256: str, file: KimiFile) -> None:
        await self._redis.set(
            keys.upload_cache_key(lane, account_id, sha256), _encoder.encode(file), ex=self._ttl_s
        )

    async def forget(self, lane: str, account_id: str, sha256s: Sequence[str]) -> None:
        if sha256s:
            await self._redis.delete(*(keys.upload_cache_key(lane, account_id, s) for s in sha256s))
