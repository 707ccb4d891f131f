"""`make run` keeps a token encryption key of its own when none is set (deploy/run.py `ensure_token_key`)."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.fernet import Fernet

from deploy.run import ensure_token_key


def test_a_key_file_is_created_once_with_mode_0600_and_kept(tmp_path: Path) -> None:
    """Without TOKEN_ENCRYPTION_KEY the first start writes a Fernet key file (0600) and later starts reuse it;
    an environment that sets a key is left alone."""
    path = tmp_path / "keys" / "token.key"
    first: dict[str, str] = {"TOKEN_KEY_FILE": str(path)}
    assert ensure_token_key(first) == (path, True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(first["TOKEN_ENCRYPTION_KEY"].encode())  # a real Fernet key
    path.chmod(0o644)
    again: dict[str, str] = {"TOKEN_KEY_FILE": str(path)}
    assert ensure_token_key(again) == (path, False)
    assert again["TOKEN_ENCRYPTION_KEY"] == first["TOKEN_ENCRYPTION_KEY"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mine = {"TOKEN_ENCRYPTION_KEY": "my passphrase", "TOKEN_KEY_FILE": str(tmp_path / "unused")}
    assert ensure_token_key(mine) is None
    assert mine["TOKEN_ENCRYPTION_KEY"] == "my passphrase" and not (tmp_path / "unused").exists()
