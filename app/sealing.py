"""Secrets at rest: what the service must read back in clear (a webhook's signing secret)
is stored sealed with Fernet (AES-128-CBC, then HMAC-SHA256 over it; the ``cryptography``
package's), so a copy of the database alone does not give the secrets away.

The key: ``DOVECOTE_SECRET_KEY``, one or more Fernet keys separated by commas (the first
seals, every one unseals: rotate by putting a new key first, then reseal with ``dovecote
secrets reseal``); unset, ``<data dir>/secret.key``, made on first use (mode 0600). Every
process that reads the database needs the same key: one data directory (as in
``docker-compose.yml``) or the same setting.

A stored value is ``fernet:<token>``; a value without the prefix (stored before sealing
existed) reads back as it is, until :func:`reseal` seals it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import Settings

PREFIX = "fernet:"
KEY_FILE = "secret.key"

_boxes: dict[tuple[str, str], MultiFernet] = {}
_lock = threading.Lock()


class Unsealable(Exception):
    """A sealed value that none of the keys opens (the key changed or was lost)."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def _file_key(data_dir: Path) -> str:
    """The data directory's key, made atomically on first use (two processes starting
    together keep the one that was linked first)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _box(settings: Settings) -> MultiFernet:
    configured = settings.secret_key.get_secret_value() if settings.secret_key else ""
    cache_key = (configured, str(settings.data_dir.resolve()))
    with _lock:
        box = _boxes.get(cache_key)
        if box is None:
            keys = [k.strip() for k in configured.split(",") if k.strip()] or [
                _file_key(settings.data_dir.resolve())
            ]
            box = _boxes[cache_key] = MultiFernet([Fernet(k) for k in keys])
        return box


def seal(value: str, *, settings: Settings) -> str:
    return PREFIX + _box(settings).encrypt(value.encode()).decode()


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def _opened(stored: str, settings: Settings, how: Callable[[MultiFernet, bytes], bytes]) -> str:
    """``how(box, token)`` on a sealed value's token; :class:`Unsealable` when no key opens it."""
    try:
        return how(_box(settings), stored.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise Unsealable(
            "no key opens this sealed secret: DOVECOTE_SECRET_KEY (or <data dir>/secret.key) "
            "is not the key that sealed it"
        ) from None


def unseal(stored: str, *, settings: Settings) -> str:
    """The clear value of ``stored``; :class:`Unsealable` when no key opens it."""
    return _opened(stored, settings, MultiFernet.decrypt) if is_sealed(stored) else stored


def reseal(stored: str, *, settings: Settings) -> str:
    """``stored`` sealed with the first key (a clear value sealed; a sealed one rotated)."""
    if not is_sealed(stored):
        return seal(stored, settings=settings)
    return PREFIX + _opened(stored, settings, MultiFernet.rotate)
