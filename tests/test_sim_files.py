"""The simulator's files over real HTTP: the Connect file service, the REST image and file paths, what it
records of each upload, the checks on referenced ids, answers that name the files, and the upload faults."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest

from kimi_sim.answers import answer_for, attachments_note
from kimi_sim.server import SimServer
from tests.sim_fixtures import SimFactory
from tests.test_sim_connect import CHAT, CONNECT, envelope, events, text_of, trailer
from tests.test_sim_connect import http as http  # the fixture
from tests.test_sim_rest import bearer, cmpl_text, login, new_chat, sse_events

UPLOAD = "/apiv2-files/file/upload"
PROGRESS = "/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
PDF = b"%PDF-1.7\n%%EOF\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kimi_auth(sim: SimServer) -> tuple[str, dict[str, str]]:
    account = sim.state.add_account("kimi_auth")
    return account.sub, bearer(account.token)


async def connect_upload(
    http: aiohttp.ClientSession, sim: SimServer, headers: dict[str, str], data: bytes, name: str, mime: str
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename=name, content_type=mime)
    async with http.post(f"{sim.url}{UPLOAD}", data=form, headers=headers) as resp:
        return resp.status, await resp.json()


async def progress(
    http: aiohttp.ClientSession, sim: SimServer, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{sim.url}{PROGRESS}", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def connect_chat(
    http: aiohttp.ClientSession, sim: SimServer, headers: dict[str, str], file_blocks: list[dict[str, Any]]
) -> bytes:
    message = {
        "role": "user",
        "blocks": [{"message_id": "", "text": {"content": "What is in it?"}}, *file_blocks],
        "scenario": "SCENARIO_K2D5",
    }
    body = envelope({"scenario": "SCENARIO_K2D5", "message": message, "options": {"thinking": False}})
    async with http.post(f"{sim.url}{CHAT}", data=body, headers=headers | CONNECT) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_connect_upload_answers_the_captured_shape(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """An upload answers `{"file": {id, meta, blob, parseResult}}`; its signed URL serves the same bytes."""
    sub, headers = kimi_auth(kimi_sim)
    status, body = await connect_upload(http, kimi_sim, headers, PNG, "猫 cat.png", "image/png")
    assert status == 200
    file = body["file"]
    assert len(file["id"]) == 36 and file["id"].count("-") == 4
    assert {k: v for k, v in file["meta"].items() if k != "createTime"} == {
        "name": "猫 cat.png",
        "contentType": "image/png",
        "sizeBytes": str(len(PNG)),
        "checksum": sha(PNG),
        "ext": "png",
        "type": "FILE_TYPE_IMAGE",
    }
    assert file["blob"]["signUrl"].endswith("&t=o") and set(file["parseResult"]["thumbnail"]) == {
        "thumbnailUrl",
        "previewUrl",
        "mobileThumbnailUrl",
    }
    async with http.get(file["blob"]["signUrl"]) as resp:
        assert resp.status == 200 and await resp.read() == PNG
    assert [u.record() for u in kimi_sim.state.uploads] == [
        {
            "id": file["id"],
            "account": sub,
            "protocol": "connect",
            "name": "猫 cat.png",
            "mime": "image/png",
            "size": len(PNG),
            "sha256": sha(PNG),
            "kind": "image",
            "status": "processing",
        }
    ]
    _, pdf = await connect_upload(http, kimi_sim, headers, PDF, "a.pdf", "application/pdf")
    assert pdf["file"]["meta"]["type"] == "FILE_TYPE_DOCUMENT" and pdf["file"]["parseResult"] == {}


async def test_parse_progress_polls_then_succeeds(
    http: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """Each file says PROCESSING for `file_parse_polls` calls, then SUCCESS; both spellings of the field work."""
    sim = await kimi_sim_factory(file_parse_polls=2)
    _, headers = kimi_auth(sim)
    _, body = await connect_upload(http, sim, headers, PDF, "a.pdf", "application/pdf")
    file_id = body["file"]["id"]
    answers = [
        await progress(http, sim, headers, {key: [file_id]}) for key in ("file_ids", "fileIds", "file_ids")
    ]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [b["progresses"] for _, b in answers] == [
        [{"fileId": file_id, "status": "PROCESS_STATUS_PROCESSING"}],
        [{"fileId": file_id, "status": "PROCESS_STATUS_PROCESSING"}],
        [{"fileId": file_id, "status": "PROCESS_STATUS_SUCCESS"}],
    ]


async def test_files_belong_to_their_account(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """Another account's file id is `not_found` to parse progress and to Chat; so is an unknown one."""
    _, owner = kimi_auth(kimi_sim)
    _, other = kimi_auth(kimi_sim)
    _, body = await connect_upload(http, kimi_sim, owner, PDF, "a.pdf", "application/pdf")
    file_id = body["file"]["id"]
    status, error = await progress(http, kimi_sim, other, {"file_ids": [file_id]})
    assert status == 404 and error["code"] == "not_found"
    for ids in ([file_id], ["no-such-file"]):
        raw = await connect_chat(http, kimi_sim, other, [{"file": {"id": i}} for i in ids])
        assert trailer(raw)["error"]["code"] == "not_found"
        assert trailer(raw)["error"]["details"][0]["debug"]["reason"] == "REASON_FILE_NOT_FOUND"


async def test_connect_chat_names_ready_files_in_its_answer(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A Chat with file blocks (status as name, number or absent) answers with the files' names, sizes and
    hashes, announces them in a `chat.files` event, and records them on the user message."""
    _, headers = kimi_auth(kimi_sim)
    _, png = await connect_upload(http, kimi_sim, headers, PNG, "cat.png", "image/png")
    _, pdf = await connect_upload(http, kimi_sim, headers, PDF, "a.pdf", "application/pdf")
    ids = [png["file"]["id"], pdf["file"]["id"]]
    raw = await connect_chat(http, kimi_sim, headers, [{"file": {"id": ids[0]}}])
    assert trailer(raw)["error"]["code"] == "failed_precondition"  # not parsed yet
    await progress(http, kimi_sim, headers, {"file_ids": ids})
    blocks = [
        {"file": {"id": ids[0], "status": "PROCESS_STATUS_SUCCESS"}},
        {"file": {"id": ids[1], "status": 3}},
    ]
    raw = await connect_chat(http, kimi_sim, headers, blocks)
    evs = events(raw)
    expected = answer_for("What is in it?") + attachments_note(
        [("cat.png", len(PNG), sha(PNG)), ("a.pdf", len(PDF), sha(PDF))]
    )
    assert text_of(evs) == expected
    assert expected.endswith(
        f" Attachments: cat.png ({len(PNG)} bytes, sha256 {sha(PNG)[:12]}); a.pdf ({len(PDF)} bytes, sha256 {sha(PDF)[:12]})."
    )
    (announced,) = [e for e in evs if e.get("mask") == "chat.files"]
    assert announced["op"] == "append" and [f["id"] for f in announced["chat"]["files"]] == ids
    (chat,) = kimi_sim.state.chats.values()
    assert chat.messages[0]["files"] == ids
    raw = await connect_chat(http, kimi_sim, headers, [{"file": {"id": ids[1]}}])
    assert text_of(events(raw)).endswith(f"a.pdf ({len(PDF)} bytes, sha256 {sha(PDF)[:12]}).")


async def test_connect_upload_refusals(http: aiohttp.ClientSession, kimi_sim_factory: SimFactory) -> None:
    """No token is 401; no file field is invalid_argument; past the storage quota is resource_exhausted."""
    sim = await kimi_sim_factory(file_quota_bytes=len(PDF) + 1)
    status, _ = await connect_upload(http, sim, {}, PDF, "a.pdf", "application/pdf")
    assert status == 401
    _, headers = kimi_auth(sim)
    async with http.post(
        f"{sim.url}{UPLOAD}", data=aiohttp.FormData({"other": "x"}), headers=headers
    ) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_argument"
    assert (await connect_upload(http, sim, headers, PDF, "a.pdf", "application/pdf"))[0] == 200
    status, error = await connect_upload(http, sim, headers, PDF, "b.pdf", "application/pdf")
    assert status == 429 and error["code"] == "resource_exhausted"
    assert [f.name for f in sim.state.uploads] == ["a.pdf"]


async def rest_image(
    http: aiohttp.ClientSession, sim: SimServer, headers: dict[str, str], data: bytes
) -> list[dict[str, Any]]:
    """pre-sign (image) → PUT → /api/file by file_id (twice): the two register answers."""
    async with http.post(
        f"{sim.url}/api/pre-sign-url", json={"action": "image", "name": "cat.png"}, headers=headers
    ) as resp:
        signed = await resp.json()
    async with http.put(signed["url"], data=data, headers={"Content-Type": "image/png"}) as resp:
        assert resp.status == 200
    register = {"type": "image", "file_id": signed["file_id"], "name": "cat.png"}
    answers = []
    for _ in range(2):
        async with http.post(f"{sim.url}/api/file", json=register, headers=headers) as resp:
            answers.append(await resp.json())
    return answers


async def test_rest_image_path_records_the_bytes(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """The image path registers by the pre-sign file_id; the file has the PUT's bytes, type and size."""
    headers = await login(http, kimi_sim)
    first, second = await rest_image(http, kimi_sim, headers, PNG)
    assert first == {
        "id": first["id"],
        "name": "cat.png",
        "size": len(PNG),
        "status": "initialized",
        "type": "image",
    }
    assert second == first | {"status": "parsed"}
    (record,) = [u.record() for u in kimi_sim.state.uploads]
    assert record | {"account": "-"} == {
        "id": first["id"],
        "account": "-",
        "protocol": "rest",
        "name": "cat.png",
        "mime": "image/png",
        "size": len(PNG),
        "sha256": sha(PNG),
        "kind": "image",
        "status": "ready",
    }


async def test_rest_completion_checks_and_names_its_refs(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """refs of the caller's parsed files are answered with their names; another account's or an unparsed
    file's id is refused before the stream starts."""
    headers = await login(http, kimi_sim)
    first, _ = await rest_image(http, kimi_sim, headers, PNG)
    chat_id = await new_chat(http, kimi_sim, headers)
    url = f"{kimi_sim.url}/api/chat/{chat_id}/completion/stream"
    body = {
        "messages": [{"role": "user", "content": "what?"}],
        "refs": [first["id"]],
        "refs_file": [{"id": first["id"]}],
    }
    async with http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200
        text = cmpl_text(sse_events(await resp.read()))
    assert text == answer_for("what?") + attachments_note([("cat.png", len(PNG), sha(PNG))])
    assert kimi_sim.state.chats[chat_id].messages[0]["files"] == [first["id"]]
    other = await login(http, kimi_sim)
    other_chat = await new_chat(http, kimi_sim, other)
    async with http.post(
        f"{kimi_sim.url}/api/chat/{other_chat}/completion/stream", json=body, headers=other
    ) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error_type": "file.not_found", "message": "找不到指定的文件"}
    kimi_sim.state.faults.arm("parse_stalled", path="/api/file")
    stalled, _ = await rest_image(http, kimi_sim, headers, PDF)
    assert stalled["status"] == "initialized"
    async with http.post(
        url, json=body | {"refs": [stalled["id"]], "refs_file": []}, headers=headers
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error_type"] == "file.not_ready"


@pytest.mark.parametrize(
    ("fault", "rest_status", "connect_status"), [("parse_failed", "failed", "PROCESS_STATUS_FAILED")]
)
async def test_parse_failed_fault(
    http: aiohttp.ClientSession, kimi_sim: SimServer, fault: str, rest_status: str, connect_status: str
) -> None:
    """`parse_failed` makes the next uploaded file's parse fail: REST register / parse_process say `failed`,
    Connect's progress says PROCESS_STATUS_FAILED."""
    kimi_sim.state.faults.arm(fault, count=2)
    headers = await login(http, kimi_sim)
    _, second = await rest_image(http, kimi_sim, headers, PNG)
    assert second["status"] == rest_status
    async with http.post(
        f"{kimi_sim.url}/api/file/parse_process", json={"ids": [second["id"]]}, headers=headers
    ) as resp:
        assert sse_events(await resp.read()) == [
            {"event": "resp", "file_info": {"id": second["id"], "status": "failed"}}
        ]
    _, connect_headers = kimi_auth(kimi_sim)
    _, body = await connect_upload(http, kimi_sim, connect_headers, PDF, "a.pdf", "application/pdf")
    file_id = body["file"]["id"]
    for expected in ("PROCESS_STATUS_PROCESSING", connect_status):
        _, answer = await progress(http, kimi_sim, connect_headers, {"file_ids": [file_id]})
        assert answer["progresses"] == [{"fileId": file_id, "status": expected}]


async def test_parse_stalled_fault_never_finishes(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """`parse_stalled`: REST parse_process streams `parsing` until the client leaves; Connect stays PROCESSING."""
    kimi_sim.state.faults.arm("parse_stalled", path="/api/file")
    kimi_sim.state.faults.arm("parse_stalled", path=UPLOAD)
    headers = await login(http, kimi_sim)
    first, second = await rest_image(http, kimi_sim, headers, PNG)
    assert first["status"] == second["status"] == "initialized"
    async with http.post(
        f"{kimi_sim.url}/api/file/parse_process", json={"ids": [first["id"]]}, headers=headers
    ) as resp:
        chunks = [await resp.content.readline() for _ in range(4)]
    assert (
        chunks[0]
        == f'data: {{"event":"resp","file_info":{{"id":"{first["id"]}","status":"parsing"}}}}\n'.encode()
    )
    assert chunks[2] == chunks[0]
    _, connect_headers = kimi_auth(kimi_sim)
    _, body = await connect_upload(http, kimi_sim, connect_headers, PDF, "a.pdf", "application/pdf")
    for _ in range(3):
        _, answer = await progress(http, kimi_sim, connect_headers, {"file_ids": [body["file"]["id"]]})
        assert answer["progresses"][0]["status"] == "PROCESS_STATUS_PROCESSING"


async def test_upload_failed_fault(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """`upload_failed` fails the uploading call: REST `/api/file` 500, Connect upload 500 `internal`; nothing is
    recorded."""
    kimi_sim.state.faults.arm("upload_failed", count=2)
    headers = await login(http, kimi_sim)
    register = {"type": "file", "name": "a.pdf", "object_name": "x", "file_id": ""}
    async with http.post(f"{kimi_sim.url}/api/file", json=register, headers=headers) as resp:
        assert resp.status == 500
        assert await resp.json() == {"error_type": "file.upload.failed", "message": "文件上传失败"}
    _, connect_headers = kimi_auth(kimi_sim)
    status, error = await connect_upload(http, kimi_sim, connect_headers, PDF, "a.pdf", "application/pdf")
    assert status == 500 and error == {"code": "internal", "message": "upload failed"}
    assert kimi_sim.state.uploads == []


async def test_state_route_lists_uploads(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """`GET /__sim/state` carries every upload's record, as `state.uploads` holds them."""
    _, headers = kimi_auth(kimi_sim)
    await connect_upload(http, kimi_sim, headers, PDF, "a.pdf", "application/pdf")
    async with http.get(f"{kimi_sim.url}/__sim/state") as resp:
        state = await resp.json()
    assert state["uploads"] == [u.record() for u in kimi_sim.state.uploads]
    async with http.get(f"{kimi_sim.url}/__sim/requests?path=file/upload") as resp:
        (logged,) = await resp.json()
    assert logged["body"]["bytes"] > len(PDF)  # multipart bodies are logged by size only
