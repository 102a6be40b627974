"""The user commands of ``dovecote``, on :mod:`dovecote.client` (the admin commands, which
run on the server's machine, are in ``app/cli.py``).

    dovecote project create NAME [--store-predictions]   prints the project id
    dovecote upload PROJECT DIR_OR_FILES...          folders are zipped on the fly (label = folder)
    dovecote train PROJECT --method M [--param k=v] [--wait]   prints the job id, or the model id
    dovecote predict PROJECT FILES...                a table
    dovecote export MODEL --format onnx -o FILE
    dovecote next PROJECT [-n 20]                    what to label next, one a line
    dovecote feedback PREDICTION (--label L | --correct)   a stored prediction becomes training data
    dovecote batch-predict MODEL [ZIP_OR_DIR] [--format csv] [-o FILE]   waits; results to FILE or stdout
    dovecote webhook add URL [--project P] [--event E]   prints the id (the secret: stderr)
    dovecote webhook list [--project P] | deliveries ID | rm ID

Server and key: ``--url``/``--key`` or ``$DOVECOTE_URL``/``$DOVECOTE_API_KEY``. Ids go to
stdout (``PRJ=$(dovecote project create terrace)``); everything for people goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dovecote.client import ApiError, Client, JobFailed

err = Console(stderr=True)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.key)


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v``: ``v`` as JSON when it parses (numbers, booleans, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def cmd_project_create(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        project = dc.create_project(
            args.name,
            description=args.description,
            classes=args.cls,
            store_predictions=args.store_predictions,
        )
    print(project["id"])


def cmd_upload(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        result = dc.upload(args.project, *args.paths, label=args.label, split=args.split)
    err.print(
        f"created {result['created']}, duplicates {result['duplicates']}, "
        f"rejected {len(result['rejected'])}"
    )
    for r in result["rejected"]:
        err.print(f"  [yellow]rejected[/] {r['filename']}: {r['code']}: {r['detail']}")


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.fields[status]:<9}[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
    )


def follow(
    dc: Client, job_id: str, get: Callable[[str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Wait for the job (``get``: how to read it, default a training job's) with a progress
    bar showing its status, stage and ETA."""
    with _progress_bar() as bar:
        task = bar.add_task("queued", total=1.0, status="queued")

        def update(job: dict[str, Any]) -> None:
            bar.update(
                task, completed=job["progress"], description=job["stage"], status=job["status"]
            )

        return dc.wait(job_id, on_update=update, get=get)


def cmd_train(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        job = dc.train(args.project, args.method, backbone=args.backbone, params=dict(args.param))
        if not args.wait:
            err.print(f"job {job['id']} {job['status']}; follow it with --wait")
            print(job["id"])
            return
        job = follow(dc, job["id"])
        model = dc.model(job["model_id"])
    m, base = model["metrics"], model["metrics"].get("baseline") or {}
    if "accuracy" in m:
        line = f"accuracy {m['accuracy']:.3f}, macro F1 {m.get('macro_f1', 0):.3f} ({m.get('validation')})"
        if "accuracy" in base:
            line += f"; baseline {base.get('name')} {base['accuracy']:.3f}"
        err.print(line)
    print(model["id"])


def cmd_predict(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        result = dc.predict(
            args.project, args.files, model_id=args.model, alias=args.alias, top_k=args.top_k
        )
    table = Table("file", "label", "score", "runner-up")
    for p in result["predictions"]:
        runner = p["scores"][1] if len(p["scores"]) > 1 else None
        table.add_row(
            p["filename"],
            p["label"] if p["label"] is not None else "[dim]none of the above[/]",
            f"{p['score']:.3f}",
            f"{runner['label']} {runner['score']:.3f}" if runner else "",
        )
    for r in result.get("rejected", []):
        table.add_row(r["filename"], f"[red]{r['code']}[/]", "", r["detail"])
    Console().print(table)
    if result.get("rejected"):
        sys.exit(1)


def cmd_export(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        path = dc.export(args.model, args.output, format=args.format)
    err.print(f"wrote {path} ({path.stat().st_size} bytes)")


def cmd_next(args: argparse.Namespace) -> None:
    """One line a suggestion, most worth labeling first: id (a prediction's, for ``dovecote
    feedback``, or an image's), file, the model's guess, its score and margin;
    tab-separated."""
    with _client(args) as dc:
        result = dc.suggestions(args.project, n=args.n)
    err.print(
        f"{len(result['items'])} of {result['pool_size']} unlabeled images, "
        f"model v{result['version']}'s guesses"
    )
    for item in result["items"]:
        guess = item["suggested_label"] if item["suggested_label"] is not None else ""
        ident = item["prediction_id"] or item["image_id"]
        numbers = f"{item['score']:.3f}\t{item['margin']:.3f}"
        print("\t".join([ident, item["filename"], guess, numbers]))


def cmd_feedback(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        done = dc.feedback(args.prediction, label=args.label, correct=args.correct or None)
    p = done["prediction"]
    err.print(f"{p['feedback']}: {p['feedback_label']} (image {done['image']['id']})")


def cmd_batch_predict(args: argparse.Namespace) -> None:
    """Start a batch prediction, follow it, then write its results (stdout by default)."""
    with _client(args) as dc:
        job = dc.batch_predict(args.model, args.images, top_k=args.top_k)
        job = follow(dc, job["id"], get=dc.batch_prediction)
        results = dc.batch_results(job["id"], format=args.format)
    c = job["counts"]
    err.print(
        f"{job['id']}: {c['predicted']} predicted, {c['rejected']} none of the above, "
        f"{c['failed']} not images"
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(results)
        err.print(f"wrote {args.output}")
    else:
        sys.stdout.write(results)


def cmd_webhook_add(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        hook = dc.create_webhook(
            args.webhook_url, project_id=args.project, events=args.event or ["job.finished"]
        )
    err.print(f"secret {hook['secret']} (shown only now: it verifies the bodies' signatures)")
    print(hook["id"])


def cmd_webhook_list(args: argparse.Namespace) -> None:
    """One line a webhook: id, project (``all``: tenant-wide), events, URL; tab-separated."""
    with _client(args) as dc:
        hooks = dc.webhooks(args.project)
    for h in hooks:
        print("\t".join([h["id"], h["project_id"] or "all", ",".join(h["events"]), h["url"]]))


def cmd_webhook_deliveries(args: argparse.Namespace) -> None:
    """One line a delivery: id, event, status, attempts, last answer; tab-separated."""
    with _client(args) as dc:
        deliveries = dc.webhook_deliveries(args.webhook)
    err.print(f"{len(deliveries)} deliveries")
    for d in deliveries:
        last = d["last_status_code"] if d["last_status_code"] is not None else d["last_error"]
        print("\t".join([d["id"], d["event"], d["status"], str(d["attempts"]), str(last or "")]))


def cmd_webhook_rm(args: argparse.Namespace) -> None:
    with _client(args) as dc:
        dc.delete_webhook(args.webhook)
    err.print(f"deleted {args.webhook}")


def register(sub: Any) -> None:
    """Add the user commands to ``dovecote``'s sub-command parser."""
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--url", help="server URL (default: $DOVECOTE_URL or http://127.0.0.1:8000)")
    conn.add_argument("--key", help="API key (default: $DOVECOTE_API_KEY)")

    project = sub.add_parser("project", help="projects").add_subparsers(
        dest="project_cmd", required=True
    )
    create = project.add_parser("create", parents=[conn], help="create a project; prints its id")
    create.add_argument("name")
    create.add_argument("--description", default="")
    create.add_argument("--class", dest="cls", action="append", default=[], help="a class (repeat)")
    create.add_argument(
        "--store-predictions",
        action="store_true",
        help="keep every predict's image and answer (for feedback and `dovecote next`)",
    )
    create.set_defaults(func=cmd_project_create)

    upload = sub.add_parser("upload", parents=[conn], help="upload image files and folders")
    upload.add_argument("project")
    upload.add_argument("paths", nargs="+", help="files, or folders with one sub-folder per label")
    upload.add_argument("--label", help="label of the files (and of images at a folder's top)")
    upload.add_argument("--split", choices=["auto", "train", "test"])
    upload.set_defaults(func=cmd_upload)

    train = sub.add_parser("train", parents=[conn], help="train a model; prints the job id")
    train.add_argument("project")
    train.add_argument("--method", default="linear_probe")
    train.add_argument("--backbone")
    train.add_argument("--param", type=parse_param, action="append", default=[], metavar="K=V")
    train.add_argument("--wait", action="store_true", help="follow it; print the model id")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser("predict", parents=[conn], help="predict images; prints a table")
    predict.add_argument("project")
    predict.add_argument("files", nargs="+")
    predict.add_argument("--model", help="a model id instead of the project's default model")
    predict.add_argument(
        "--alias", help="the project's alias to predict with (default: production)"
    )
    predict.add_argument("--top-k", type=int, default=5)
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser("export", parents=[conn], help="download a model as one file")
    export.add_argument("model")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("-o", "--output", required=True)
    export.set_defaults(func=cmd_export)

    after = sub.add_parser("next", parents=[conn], help="the unlabeled images to label next")
    after.add_argument("project")
    after.add_argument("-n", type=int, default=20, help="how many (1-100)")
    after.set_defaults(func=cmd_next)

    feedback = sub.add_parser(
        "feedback", parents=[conn], help="label a stored prediction (it becomes training data)"
    )
    feedback.add_argument("prediction", metavar="PREDICTION_ID")
    what = feedback.add_mutually_exclusive_group(required=True)
    what.add_argument("--label", help="what the image is")
    what.add_argument("--correct", action="store_true", help="the model's answer was right")
    feedback.set_defaults(func=cmd_feedback)

    batch = sub.add_parser(
        "batch-predict", parents=[conn], help="predict a zip or folder (or the unlabeled pool)"
    )
    batch.add_argument("model")
    batch.add_argument("images", nargs="?", help="a .zip or a folder (default: the unlabeled pool)")
    batch.add_argument("--top-k", type=int, default=5)
    batch.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    batch.add_argument("-o", "--output", help="write the results here (default: stdout)")
    batch.set_defaults(func=cmd_batch_predict)

    webhook = sub.add_parser("webhook", help="webhooks").add_subparsers(
        dest="webhook_cmd", required=True
    )
    add = webhook.add_parser("add", parents=[conn], help="register a URL; prints the id")
    add.add_argument("webhook_url", metavar="URL")
    add.add_argument("--project", help="a project's events only (default: every project's)")
    add.add_argument("--event", action="append", help="an event (repeat; default job.finished)")
    add.set_defaults(func=cmd_webhook_add)
    listing = webhook.add_parser("list", parents=[conn], help="webhooks, one a line")
    listing.add_argument("--project", help="that project's own (default: all the tenant's)")
    listing.set_defaults(func=cmd_webhook_list)
    for name, func, text in (
        ("deliveries", cmd_webhook_deliveries, "a webhook's deliveries, one a line"),
        ("rm", cmd_webhook_rm, "delete a webhook and its deliveries"),
    ):
        command = webhook.add_parser(name, parents=[conn], help=text)
        command.add_argument("webhook", metavar="ID")
        command.set_defaults(func=func)


def run(func: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run a user command; an API error is one red line and exit status 1."""
    try:
        func(args)
    except JobFailed as exc:
        err.print(f"[red]job {exc.job['id']} failed[/]: {exc.code}: {exc.detail}")
        sys.exit(1)
    except ApiError as exc:
        err.print(f"[red]error {exc.status}[/] {exc.code}: {exc.detail}")
        sys.exit(1)
