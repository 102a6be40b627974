"""What a body-carrying request's second key lookup cost: one ``tenants.authenticate`` (the
API-key query, in a fresh session as a route has) against taking the tenant ``EarlyAuth``
already found into the route's session (``Session.merge(load=False)``, no query).

    python -m bench.auth_lookup [--database-url postgresql+psycopg://postgres@127.0.0.1/DB]
        [--repeat 3000]

Without ``--database-url`` an SQLite file in a temporary folder. The database is migrated
and gets one tenant with one key; give PostgreSQL an empty database of its own.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from sqlalchemy.orm import Session

from app.cli import alembic_config
from app.config import Settings
from app.db.session import get_sessionmaker
from app.services import tenants
from bench._common import machine, median, percentile


def _timed(
    sessions: Callable[[], Session], step: Callable[[Session], object], n: int
) -> list[float]:
    """Milliseconds of ``step`` in a fresh session each time, the first tenth left out."""
    times = []
    for _ in range(n):
        with sessions() as db:
            t = time.perf_counter()
            step(db)
            times.append((time.perf_counter() - t) * 1e3)
    return times[n // 10 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--repeat", type=int, default=3000)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="auth-lookup-"))
    settings = Settings(data_dir=data, database_url=args.database_url, prewarm=False)
    url = settings.resolved_database_url
    command.upgrade(alembic_config(url), "head")  # the database a server would have
    sessions = get_sessionmaker(url)
    with sessions() as db:
        key = tenants.create_key(db=db, tenant_name="bench-auth")
        known = tenants.authenticate(db=db, key=key, admin_key=None)

    print(f"{machine()}; {url.split('://')[0]}; {args.repeat} times each")
    steps: dict[str, Callable[[Session], object]] = {
        "key lookup (tenants.authenticate)": lambda db: tenants.authenticate(
            db=db, key=key, admin_key=None
        ),
        "known tenant (merge, load=False)": lambda db: db.merge(known, load=False),
    }
    for name, step in steps.items():
        ms = _timed(sessions, step, args.repeat)
        print(f"{name:>36}: median {median(ms):.3f} ms, p95 {percentile(ms, 95):.3f} ms")


if __name__ == "__main__":
    main()
