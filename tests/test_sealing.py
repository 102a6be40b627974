"""Secrets sealed at rest (app/sealing.py): the key from the setting or the data directory."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app import sealing
from app.config import Settings


def _seal_in(data_dir: Path, i: int) -> str:
    return sealing.seal(f"secret-{i}", settings=Settings(data_dir=data_dir))


def test_the_data_directorys_key_is_made_once_and_shared(tmp_path: Path) -> None:
    """Processes starting together on one data directory make one key: what one seals,
    the others open."""
    data = tmp_path / "data"
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        sealed = list(pool.map(_seal_in, [data] * 8, range(8)))
    assert [p.name for p in data.iterdir()] == [sealing.KEY_FILE]  # no temporary files left
    assert (data / sealing.KEY_FILE).stat().st_mode & 0o777 == 0o600
    reader = Settings(data_dir=data)
    assert [sealing.unseal(s, settings=reader) for s in sealed] == [f"secret-{i}" for i in range(8)]
    other = Settings(data_dir=tmp_path / "elsewhere")
    with pytest.raises(sealing.Unsealable):
        sealing.unseal(sealed[0], settings=other)


def test_a_configured_key_wins_and_a_clear_value_passes_through(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key=SecretStr(sealing.new_key()))
    sealed = sealing.seal("whsec_x", settings=settings)
    assert sealed.startswith(sealing.PREFIX) and "whsec_x" not in sealed
    assert sealing.unseal(sealed, settings=settings) == "whsec_x"
    assert not (tmp_path / sealing.KEY_FILE).exists()  # the setting, not a file
    assert sealing.unseal("whsec_plain", settings=settings) == "whsec_plain"
    assert sealing.seal("whsec_x", settings=settings) != sealed  # a fresh IV and time each time


@pytest.mark.parametrize("value", ["nope", "a,b", sealing.new_key() + ",short"])
def test_a_key_that_is_not_fernets_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="DOVECOTE_SECRET_KEY"):
        Settings(secret_key=value)


def test_an_empty_key_setting_is_no_setting() -> None:
    assert Settings(secret_key="").secret_key is None  # compose's ${DOVECOTE_SECRET_KEY:-}
