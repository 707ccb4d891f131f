"""Files a chat turn references: which ids each protocol sends, and whether the caller may use them.

REST sends ids in `refs` and in `refs_file[].id`; Connect sends `{"file": {"id", "status"?}}` blocks (status a
name or the SPA's number). A referenced id must be a file of the calling account whose parse succeeded;
otherwise the turn is refused before it starts (Kimi's exact error is not documented: the simulator answers
REST 400 `file.not_found` / `file.not_ready`, Connect a flag-2 `not_found` / `failed_precondition` trailer).
"""

from __future__ import annotations

from typing import Any

from .state import SimFile, SimState


def rest_file_ids(body: dict[str, Any]) -> list[str]:
    ids: list[str] = [str(ref) for ref in body.get("refs") or [] if isinstance(ref, str | int)]
    for entry in body.get("refs_file") or []:
        if isinstance(entry, dict) and entry.get("id"):
            ids.append(str(entry["id"]))
    return list(dict.fromkeys(ids))


def connect_file_ids(message: dict[str, Any]) -> list[str]:
    blocks = message.get("blocks")
    ids = [
        str(block["file"].get("id") or "")
        for block in (blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict) and isinstance(block.get("file"), dict)
    ]
    return list(dict.fromkeys(ids))


def referenced_files(state: SimState, user: str, ids: list[str]) -> tuple[list[SimFile], str | None]:
    """The user's files for `ids`, or the first problem: `not_found` (unknown or another user's) or
    `not_ready` (its parse has not succeeded)."""
    files = []
    for file_id in ids:
        sim_file = state.file_for(user, file_id)
        if sim_file is None:
            return [], "not_found"
        if sim_file.status != "ready":
            return [], "not_ready"
        files.append(sim_file)
    return files, None


def note_items(files: list[SimFile]) -> list[tuple[str, int, str]]:
    """What the answer names of each file (answers.attachments_note)."""
    return [(f.name, f.size, f.sha256) for f in files]
