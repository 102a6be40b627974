"""The user commands of ``dovecote`` against a real served instance, as a shell would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import Served

pytestmark = pytest.mark.integration


def dovecote(served: Served, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOVECOTE_URL": served.url, "DOVECOTE_API_KEY": key or served.key}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cli_walkthrough(
    served: Served, photo_folder: Path, new_photos: list[Path], tmp_path: Path
) -> None:
    project = ok(dovecote(served, "project", "create", "digits-cli"))
    assert project.startswith("prj_")
    upload = dovecote(served, "upload", project, str(photo_folder))
    assert "created 18, duplicates 0, rejected 0" in ok(upload) + upload.stderr
    train = dovecote(served, "train", project, "--method", "knn", "--param", "k=3", "--wait")
    model = ok(train)
    assert model.startswith("mdl_")
    assert "succeeded" in train.stderr and "accuracy" in train.stderr and "baseline" in train.stderr
    predict = dovecote(served, "predict", project, *map(str, new_photos[:2]))
    table = ok(predict)
    assert "new-0.png" in table and "new-1.png" in table
    rejected = dovecote(served, "predict", project, *map(str, new_photos))
    assert rejected.returncode == 1 and "image_undecodable" in rejected.stdout
    out = tmp_path / "m.onnx"
    ok(dovecote(served, "export", model, "--format", "onnx", "-o", str(out)))
    assert out.stat().st_size > 1000
    job = ok(dovecote(served, "train", project, "--method", "knn"))  # without --wait: the id
    assert job.startswith("job_")


def test_cli_errors_say_what_to_do(served: Served) -> None:
    r = dovecote(served, "project", "create", "x", key="wrong")
    assert r.returncode == 1 and "dovecote keys create" in r.stderr and r.stdout == ""
    r = dovecote(served, "train", "prj_missing", "--param", "nokey")
    assert r.returncode == 2 and "expected key=value" in r.stderr


def test_cli_webhooks(served: Served) -> None:
    project = ok(dovecote(served, "project", "create", "hooked-cli"))
    add = dovecote(served, "webhook", "add", "http://127.0.0.1:9/hook", "--project", project)
    hook = ok(add)
    assert hook.startswith("whk_") and "secret whsec_" in add.stderr
    tenant_wide = ok(dovecote(served, "webhook", "add", "http://127.0.0.1:9/all"))
    mine = ok(dovecote(served, "webhook", "list", "--project", project))
    assert mine == f"{hook}\t{project}\tjob.finished\thttp://127.0.0.1:9/hook"
    every = ok(dovecote(served, "webhook", "list")).splitlines()
    assert f"{tenant_wide}\tall\tjob.finished\thttp://127.0.0.1:9/all" in every
    deliveries = dovecote(served, "webhook", "deliveries", hook)
    assert ok(deliveries) == "" and "0 deliveries" in deliveries.stderr
    ok(dovecote(served, "webhook", "rm", hook))
    assert hook not in ok(dovecote(served, "webhook", "list"))
    refused = dovecote(served, "webhook", "add", "file:///etc/passwd")
    assert refused.returncode == 1 and "422" in refused.stderr
    assert "webhook_url_refused" in refused.stderr and refused.stdout == ""
    gone = dovecote(served, "webhook", "rm", hook)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_admin_commands_are_still_there() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("serve", "worker", "migrate", "keys", "project", "upload", "train"):
        assert command in r.stdout


def test_cli_after_the_first_model(
    served: Served, photo_folder: Path, new_photos: list[Path], tmp_path: Path
) -> None:
    project = ok(dovecote(served, "project", "create", "loop-cli", "--store-predictions"))
    ok(dovecote(served, "upload", project, str(photo_folder)))
    model = ok(dovecote(served, "train", project, "--method", "knn", "--param", "k=3", "--wait"))
    ok(dovecote(served, "predict", project, str(new_photos[0])))
    listed = dovecote(served, "next", project, "-n", "5")
    [line] = ok(listed).splitlines()
    prediction, filename, guess, score, margin = line.split("\t")
    assert "1 of 1 unlabeled images" in listed.stderr
    assert prediction.startswith("prd_") and filename == "new-0.png" and guess in ("0", "1", "2")
    assert 0 <= float(score) <= 1 and 0 <= float(margin) <= 1
    feedback = dovecote(served, "feedback", prediction, "--label", "0")
    assert ok(feedback) == "" and ": 0 (image img_" in feedback.stderr
    neither = dovecote(served, "feedback", prediction)
    assert neither.returncode == 2 and "--label" in neither.stderr

    out = tmp_path / "results.csv"
    batch = dovecote(served, "batch-predict", model, str(photo_folder / "0"), "--format", "csv",
                     "-o", str(out))  # fmt: skip
    ok(batch)
    assert "6 predicted" in batch.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("filename,") and len(lines) == 7
    empty = dovecote(served, "batch-predict", model)  # the pool is empty: all labeled
    assert empty.returncode == 1 and "unlabeled_pool_empty" in empty.stderr
