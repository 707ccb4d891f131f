"""Attachment uploads on both lanes against the real simulator and a real Redis: the bytes that reach "Kimi",
the answer that names them, one upload per file per account, and the 502 / 504 failures."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from kimi_sim.answers import answer_for, attachments_note
from kimi_sim.server import SimServer
from shared.attachments import AttachmentStore, digest
from shared.errors import (
    GatewayError,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_event,
    error_from_event,
)
from shared.models import resolve_model
from shared.schema import AttachmentPart, ChatRequest, Message, Start, TextPart
from tests import test_kimi_connect_driver, test_kimi_rest_driver
from tests.driver_helpers import FAST, collect, text_of
from tests.driver_helpers import session as session  # the fixture
from upstream_worker.attachments import Attachments
from upstream_worker.kimi import ConnectDriver, Creds, RestDriver, UpstreamCall
from upstream_worker.kimi.files import FileForgotten, KimiFile, ParseFailed, UploadFailed
from upstream_worker.retries import FAILOVER

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
PDF = b"%PDF-1.7\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 20 + b"%%EOF\n"
PROMPT = "What is in these?"


def part(data: bytes, name: str, mime: str) -> AttachmentPart:
    kind = "image" if mime.startswith("image/") else "file"
    return AttachmentPart(
        sha256=digest(data), mime=mime, name=name, size=len(data), kind=kind, source="inline"
    )


IMAGE = part(PNG, "cat.png", "image/png")
DOC = part(PDF, "paper.pdf", "application/pdf")


@dataclass
class Lane:
    name: str
    model: str

    async def creds(self, sim: SimServer, session: aiohttp.ClientSession) -> Creds:
        if self.name == "rest":
            return await test_kimi_rest_driver.creds_for(sim, session)
        return test_kimi_connect_driver.creds_for(sim)

    def driver(self, session: aiohttp.ClientSession, sim: SimServer) -> RestDriver | ConnectDriver:
        return (RestDriver if self.name == "rest" else ConnectDriver)(session, sim.url, FAST)


LANES = [Lane("rest", "kimi"), Lane("connect", "kimi-k2.5-instant")]


@pytest.fixture(params=LANES, ids=lambda lane: lane.name)
def lane(request: pytest.FixtureRequest) -> Lane:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def attachments(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> AsyncIterator[Attachments]:
    yield Attachments.create(redis, session, kimi_sim.url, dataclasses.replace(FAST, parse_s=1.0))


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def upload_records(sim: SimServer) -> list[dict[str, object]]:
    return [{k: v for k, v in u.record().items() if k != "id"} for u in sim.state.uploads]


async def test_image_and_pdf_reach_kimi_byte_for_byte(
    lane: Lane,
    attachments: Attachments,
    redis: aioredis.Redis,
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
) -> None:
    """Both files are uploaded as exactly these bytes, the image down the image path, and a turn that
    references them gets an answer naming each one."""
    creds = await lane.creds(kimi_sim, session)
    await AttachmentStore(redis).put("job-1", {IMAGE.sha256: PNG, DOC.sha256: PDF})
    files = await attachments.files_for(lane.name, creds, "job-1", [IMAGE, DOC])
    owner = next(a.sub for a in kimi_sim.state.accounts.values() if a.sub.startswith(creds.account_id))
    expected = [
        {"account": owner, "protocol": lane.name, "name": p.name, "mime": p.mime, "size": p.size,
         "sha256": p.sha256, "kind": p.kind, "status": "ready"}
        for p in (IMAGE, DOC)
    ]  # fmt: skip
    assert upload_records(kimi_sim) == expected
    assert kimi_sim.state.blobs == {IMAGE.sha256: PNG, DOC.sha256: PDF}
    assert [f.id for f in files] == [u.id for u in kimi_sim.state.uploads]
    assert [(f.kind, f.name, f.size) for f in files] == [
        ("image", "cat.png", len(PNG)),
        ("file", "paper.pdf", len(PDF)),
    ]
    if lane.name == "rest":
        presigns = [r.body for r in kimi_sim.state.requests if r.path == "/api/pre-sign-url"]
        assert presigns == [{"action": "image", "name": "cat.png"}, {"action": "file", "name": "paper.pdf"}]
        puts = [r for r in kimi_sim.state.requests if r.path.startswith("/oss/")]
        assert all("Authorization" not in r.headers for r in puts)

    spec = resolve_model(lane.model)
    assert spec is not None
    request = ChatRequest(
        request_id="job-1",
        model=lane.model,
        messages=[Message(role="user", content=[TextPart(PROMPT), IMAGE, DOC])],
    )
    call = UpstreamCall(request=request, spec=spec, creds=creds, files=files)
    answer = text_of(await collect(lane.driver(session, kimi_sim), call))
    prompt = PROMPT + "\n" if lane.name == "rest" else PROMPT
    assert answer == answer_for(prompt) + attachments_note(
        [("cat.png", len(PNG), digest(PNG)), ("paper.pdf", len(PDF), digest(PDF))]
    )


async def test_one_upload_per_file_per_account(
    lane: Lane,
    attachments: Attachments,
    redis: aioredis.Redis,
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
) -> None:
    """The same bytes in a later job of the same account are a cache hit (no bytes read, no upload);
    another account uploads its own copy."""
    creds = await lane.creds(kimi_sim, session)
    store = AttachmentStore(redis)
    hits, uploads = (
        ("kimi_worker_attachment_cache_hits_total", {"lane": lane.name}),
        (
            "kimi_worker_attachment_uploads_total",
            {"kind": "image", "lane": lane.name},
        ),
    )
    sent = ("kimi_worker_attachment_upload_bytes_total", {"lane": lane.name})
    before = [sample(*hits), sample(*uploads), sample(*sent)]
    await store.put("turn-1", {IMAGE.sha256: PNG})
    first = await attachments.files_for(lane.name, creds, "turn-1", [IMAGE])
    second = await attachments.files_for(lane.name, creds, "turn-3-without-bytes", [IMAGE, IMAGE])
    assert second == [first[0], first[0]] and len(kimi_sim.state.uploads) == 1
    assert [sample(*hits), sample(*uploads), sample(*sent)] == [
        before[0] + 2,
        before[1] + 1,
        before[2] + len(PNG),
    ]
    other = await lane.creds(kimi_sim, session)
    await store.put("turn-x", {IMAGE.sha256: PNG})
    (theirs,) = await attachments.files_for(lane.name, other, "turn-x", [IMAGE])
    assert theirs.id != first[0].id and len(kimi_sim.state.uploads) == 2
    await attachments.forget(lane.name, creds.account_id, [IMAGE])
    await store.put("turn-5", {IMAGE.sha256: PNG})
    (again,) = await attachments.files_for(lane.name, creds, "turn-5", [IMAGE])
    assert again.id != first[0].id and len(kimi_sim.state.uploads) == 3


async def test_a_parse_that_never_finishes_is_a_504_within_the_bound(
    lane: Lane,
    attachments: Attachments,
    redis: aioredis.Redis,
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
) -> None:
    """Kimi never finishing its read of a file fails the turn with 504 after KIMI_PARSE_TIMEOUT_S (1 s here)."""
    creds = await lane.creds(kimi_sim, session)
    kimi_sim.state.faults.arm("parse_stalled")
    await AttachmentStore(redis).put("job-1", {DOC.sha256: PDF})
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await attachments.files_for(lane.name, creds, "job-1", [DOC])
    assert 1.0 <= time.monotonic() - started < 2.5
    assert caught.value.message == "Kimi did not finish reading the file 'paper.pdf' within 1 s"
    assert caught.value.status == 504 and kimi_sim.state.uploads[0].status == "processing"


async def test_an_upload_failure_is_a_502_that_fails_over(
    lane: Lane,
    attachments: Attachments,
    redis: aioredis.Redis,
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
) -> None:
    """Kimi refusing the bytes is a 502 the worker may fail over (an UpstreamUnavailable), counted by lane."""
    creds = await lane.creds(kimi_sim, session)
    kimi_sim.state.faults.arm("upload_failed")
    await AttachmentStore(redis).put("job-1", {IMAGE.sha256: PNG})
    errors = ("kimi_worker_attachment_upload_errors_total", {"lane": lane.name, "kind": "unavailable"})
    before = sample(*errors)
    with pytest.raises(UploadFailed) as caught:
        await attachments.files_for(lane.name, creds, "job-1", [IMAGE])
    assert caught.value.status == 502 and isinstance(caught.value, FAILOVER)
    assert caught.value.message.startswith("Kimi did not take the upload of 'cat.png': Kimi")
    assert sample(*errors) == before + 1 and kimi_sim.state.uploads == []
    event = error_event(caught.value)
    assert (event.kind, event.status, event.retryable) == ("unavailable", 502, True)
    rebuilt = error_from_event(event)
    assert isinstance(rebuilt, UpstreamUnavailable) and rebuilt.status == 502


async def test_a_file_kimi_cannot_read_is_a_502_without_failover(
    lane: Lane,
    attachments: Attachments,
    redis: aioredis.Redis,
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
) -> None:
    """A failed parse is a 502 naming the file; another account would fail alike, so it is no failover."""
    creds = await lane.creds(kimi_sim, session)
    kimi_sim.state.faults.arm("parse_failed")
    await AttachmentStore(redis).put("job-1", {DOC.sha256: PDF})
    with pytest.raises(ParseFailed) as caught:
        await attachments.files_for(lane.name, creds, "job-1", [DOC])
    assert caught.value.message == "Kimi could not read the file 'paper.pdf'"
    assert caught.value.status == 502 and not isinstance(caught.value, FAILOVER)
    assert (error_event(caught.value).kind, error_event(caught.value).retryable) == ("upstream", False)


async def test_bytes_gone_and_deleted(
    attachments: Attachments, redis: aioredis.Redis, kimi_sim: SimServer
) -> None:
    """A part whose bytes are no longer held is a 503 before any upload; a lane without an uploader uploads
    nothing; `delete_bytes` removes a job's bytes."""
    creds = test_kimi_connect_driver.creds_for(kimi_sim)
    with pytest.raises(ServiceUnavailable):
        await attachments.files_for("connect", creds, "job-gone", [IMAGE])
    assert (
        kimi_sim.state.uploads == [] and await attachments.files_for("connect", creds, "job-gone", []) == []
    )
    assert (
        await attachments.files_for("official", creds, "job-gone", [IMAGE]) == []
    )  # inline bytes: no upload
    store = AttachmentStore(redis)
    await store.put("job-2", {IMAGE.sha256: PNG})
    await attachments.delete_bytes("job-2")
    with pytest.raises(ServiceUnavailable):
        await store.get("job-2", IMAGE.sha256)


async def test_a_stale_file_id_fails_the_turn_before_it_starts(
    lane: Lane, kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """A file id Kimi does not know for this account (what a stale cache entry causes; the runner then forgets
    it and tries once more) fails the turn before its Start with FileForgotten, on both lanes."""
    creds = await lane.creds(kimi_sim, session)
    spec = resolve_model(lane.model)
    assert spec is not None
    request = ChatRequest(request_id="r", model=spec.id, messages=[Message(role="user", content=PROMPT)])
    call = UpstreamCall(request=request, spec=spec, creds=creds, files=[KimiFile("gone", "file", "a.pdf", 3)])
    expected = (
        (FileForgotten, "Kimi: file not found")
        if lane.name == "connect"
        else (FileForgotten, "Kimi: 找不到指定的文件")
    )
    events = []
    with pytest.raises(GatewayError) as caught:
        async for event in lane.driver(session, kimi_sim).chat(call):
            events.append(event)
    assert (type(caught.value), caught.value.message) == expected
    assert not any(isinstance(e, Start) for e in events)
