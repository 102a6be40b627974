"""``dovecote``: the admin commands (serve, worker, migrate, keys create), run where the
server runs, beside the user commands of :mod:`dovecote.cli` (project, upload, train,
predict, export), which talk to a server over HTTP."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dovecote import cli as user_cli

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
WORKER_STOP_SECONDS = 30  # how long `serve` lets its worker finish the running job
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _apply_data_dir(data_dir: str | None) -> None:
    if data_dir:
        os.environ["DOVECOTE_DATA_DIR"] = str(Path(data_dir).resolve())
    from app.config import get_settings

    get_settings.cache_clear()
    get_settings().data_dir.mkdir(parents=True, exist_ok=True)


def _configure_torch() -> None:
    from app.config import get_settings

    threads = get_settings().torch_threads
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def alembic_config(database_url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migrate() -> None:
    from alembic import command

    from app.config import get_settings

    command.upgrade(alembic_config(get_settings().resolved_database_url), "head")


def cmd_migrate(args: argparse.Namespace) -> None:
    _apply_data_dir(args.data_dir)
    migrate()
    print("database is at the latest migration")


def _stop_with_parent(parent: int) -> None:
    """Stop this process (SIGTERM, Celery's warm shutdown) when process ``parent`` ends, even
    by SIGKILL: Linux's ``PR_SET_PDEATHSIG``, elsewhere a thread that polls the parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
    if os.getppid() != parent:  # it ended before we asked
        sys.exit(0)


def _queue_list(value: str) -> str:
    """``--queues``: known queue names, comma-separated."""
    from typing import get_args

    from app.config import QueueName

    names = [q.strip() for q in value.split(",") if q.strip()]
    unknown = sorted(set(names) - set(get_args(QueueName)))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected queue names from {', '.join(get_args(QueueName))}; got {value!r}"
        )
    return ",".join(names)


def cmd_worker(args: argparse.Namespace) -> None:
    if args.stop_with_parent is not None:
        _stop_with_parent(args.stop_with_parent)
    if args.queues is not None:
        os.environ["DOVECOTE_WORKER_QUEUES"] = args.queues
    _apply_data_dir(args.data_dir)  # reads the settings again, with the queues above
    _configure_torch()
    from app.config import get_settings

    queues = get_settings().consumed_queues
    if "gpu" in queues:
        import torch

        if not torch.cuda.is_available():
            print(
                "warning: this worker consumes the `gpu` queue but torch sees no CUDA device; "
                "its backbone-training jobs will run on the CPU",
                file=sys.stderr,
            )
    import worker.celery_app
    from worker.celery_app import celery

    if args.ready_file:
        worker.celery_app.ready_file = Path(args.ready_file)
    celery.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={','.join(queues)}",
            f"--loglevel={args.loglevel}",
        ]
    )


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Celery's warm shutdown: the running job may finish), SIGKILL after
    ``WORKER_STOP_SECONDS`` or at a second signal (late acks requeue the job)."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    finally:  # also on a second SIGTERM or Ctrl-C while waiting
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _worker_ready(
    worker: subprocess.Popen[bytes] | None, ready_file: Path | None
) -> Callable[[], bool] | None:
    """``/readyz``'s check of the worker ``serve`` started: running, and said it is ready."""
    if worker is None or ready_file is None:
        return None
    return lambda: worker.poll() is None and ready_file.exists()


def cmd_serve(args: argparse.Namespace) -> None:
    """API plus one worker process, everything embedded under the data directory.

    The worker stops with the server, every time: SIGTERM and SIGHUP become ``SystemExit``
    (uvicorn re-raises the signal it shut down on, whose default action would end this
    process without ``finally``), so the worker is stopped on the way out; and the worker
    itself ends when this process dies in a way that runs no code (SIGKILL)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    _apply_data_dir(args.data_dir)
    worker = None
    ready_file: Path | None = None
    try:
        migrate()
        _configure_torch()
        import uvicorn

        from app.api.main import create_app
        from app.config import get_settings

        settings = get_settings()
        if not args.no_worker:
            # The worker writes it once connected and warm: /readyz waits for it.
            ready_file = settings.data_dir / f"worker-{os.getpid()}.ready"
            ready_file.unlink(missing_ok=True)
            worker = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--data-dir", str(settings.data_dir),
                 "--stop-with-parent", str(os.getpid()), "--ready-file", str(ready_file)]
            )  # fmt: skip
        print(
            f"Dovecote on http://{args.host}:{args.port}  (docs: /docs, data: {settings.data_dir})"
        )
        if not settings.api_key:
            print("warning: DOVECOTE_API_KEY is not set; create keys with `dovecote keys create`")
        app = create_app(settings, worker_ready=_worker_ready(worker, ready_file))
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        if worker is not None:
            _stop_worker(worker)
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def cmd_keys_create(args: argparse.Namespace) -> None:
    _apply_data_dir(args.data_dir)
    from app.config import get_settings
    from app.db.session import session_scope
    from app.services.tenants import create_key

    with session_scope(get_settings().resolved_database_url) as db:
        key = create_key(db=db, tenant_name=args.tenant)
    print(key)


def cmd_keys_list(args: argparse.Namespace) -> None:
    _apply_data_dir(args.data_dir)
    from app.config import get_settings
    from app.db.session import session_scope
    from app.services.tenants import list_keys

    with session_scope(get_settings().resolved_database_url) as db:
        rows = [
            (k.id, k.tenant.name, k.prefix + "...", k.created_at, k.revoked_at)
            for k in list_keys(db=db, tenant_name=args.tenant)
        ]
    print("id\ttenant\tprefix\tcreated_at\trevoked_at")
    for key_id, tenant, prefix, created, revoked in rows:
        print(f"{key_id}\t{tenant}\t{prefix}\t{created:%Y-%m-%dT%H:%M:%S}\t"
              f"{f'{revoked:%Y-%m-%dT%H:%M:%S}' if revoked else '-'}")  # fmt: skip


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    _apply_data_dir(args.data_dir)
    from app.config import get_settings
    from app.db.session import session_scope
    from app.errors import NotFound
    from app.services.tenants import revoke_key

    try:
        with session_scope(get_settings().resolved_database_url) as db:
            row = revoke_key(db=db, key=args.key)
            print(f"revoked {row.id} ({row.prefix}..., tenant {row.tenant.name})")
    except NotFound as exc:
        sys.exit(f"error: {exc.detail}")


def cmd_secrets_new_key(args: argparse.Namespace) -> None:
    from app.sealing import new_key

    print(new_key())


def cmd_secrets_reseal(args: argparse.Namespace) -> None:
    _apply_data_dir(args.data_dir)
    from app.config import get_settings
    from app.db.session import session_scope
    from app.sealing import Unsealable
    from app.services.webhooks import reseal_secrets

    settings = get_settings()
    try:
        with session_scope(settings.resolved_database_url) as db:
            counts = reseal_secrets(db=db, settings=settings)
    except Unsealable as exc:
        sys.exit(f"error: {exc}; nothing was changed")
    print(f"webhook secrets: {counts['sealed']} sealed, {counts['rotated']} resealed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dovecote",
        description="Dovecote. Admin (on the server's machine): serve, worker, migrate, keys, "
        "secrets. "
        "User (over HTTP): project, upload, train, predict, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", help="data directory (default: $DOVECOTE_DATA_DIR or ./data)")
        return p

    serve = with_data_dir(sub.add_parser("serve", help="run the API and one worker"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="run the API alone")
    serve.set_defaults(func=cmd_serve)

    work = with_data_dir(sub.add_parser("worker", help="run a training worker"))
    work.add_argument("--loglevel", default="INFO")
    work.add_argument(
        "--queues",
        type=_queue_list,
        metavar="Q[,Q]",
        help="queues to consume: train (frozen-feature jobs), gpu (backbone training); default: "
        "$DOVECOTE_WORKER_QUEUES, else train (and gpu with DOVECOTE_GPU_QUEUE=true)",
    )
    work.add_argument("--stop-with-parent", type=int, metavar="PID", help=argparse.SUPPRESS)
    work.add_argument("--ready-file", metavar="PATH", help=argparse.SUPPRESS)
    work.set_defaults(func=cmd_worker)

    with_data_dir(sub.add_parser("migrate", help="upgrade the database")).set_defaults(
        func=cmd_migrate
    )

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = with_data_dir(keys.add_parser("create", help="create a key (printed once)"))
    create.add_argument("--tenant", required=True)
    create.set_defaults(func=cmd_keys_create)
    listing = with_data_dir(keys.add_parser("list", help="list keys (prefixes, never keys)"))
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.set_defaults(func=cmd_keys_list)
    revoke = with_data_dir(keys.add_parser("revoke", help="revoke a key (401 from then on)"))
    revoke.add_argument("key", help="the key's id (from `keys list`), its prefix, or the key")
    revoke.set_defaults(func=cmd_keys_revoke)
    secrets = sub.add_parser("secrets", help="the key that seals stored secrets")
    secrets_sub = secrets.add_subparsers(dest="secrets", required=True)
    secrets_sub.add_parser("new-key", help="print a new key for DOVECOTE_SECRET_KEY").set_defaults(
        func=cmd_secrets_new_key
    )
    with_data_dir(
        secrets_sub.add_parser(
            "reseal",
            help="seal stored secrets with the first key (after an upgrade, or to rotate)",
        )
    ).set_defaults(func=cmd_secrets_reseal)
    user_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.func.__module__ == user_cli.__name__:
        user_cli.run(args.func, args)
    else:
        args.func(args)


if __name__ == "__main__":
    main()
