"""The predictor's bound on images in inference at once (``DOVECOTE_INFERENCE_MAX_IMAGES``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.services.predict import get_predictor
from app.transfer.predictor import ImageBudget
from tests.conftest import make_settings


def _hammer(budget: ImageBudget, sizes: list[int]) -> list[int]:
    seen: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        with budget.hold(n):
            with lock:
                seen.append(budget.in_flight)
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return seen


def test_budget_never_exceeds_its_limit_and_everyone_gets_through() -> None:
    budget = ImageBudget(8)
    seen = _hammer(budget, [3, 5, 8, 16, 1, 7, 2, 4] * 3)
    assert len(seen) == 24
    assert max(seen) <= 8
    assert budget.peak <= 8
    assert budget.in_flight == 0


def test_budget_lets_a_batch_larger_than_the_limit_through_alone() -> None:
    budget = ImageBudget(4)
    with budget.hold(16):
        assert budget.in_flight == 4


def test_zero_means_no_limit() -> None:
    budget = ImageBudget(0)
    seen = _hammer(budget, [16] * 4)
    assert len(seen) == 4
    assert budget.in_flight == 0
    with pytest.raises(ValueError):
        ImageBudget(-1)


def test_the_api_predictor_takes_its_limit_from_settings(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, inference_max_images=24)
    assert get_predictor(settings).budget.limit == 24


def test_waiters_go_first_come_first_served() -> None:
    budget = ImageBudget(4)
    order: list[int] = []
    gate = budget.hold(4)
    gate.__enter__()
    threads = []
    for i, n in enumerate([4, 1, 4, 1]):
        t = threading.Thread(target=lambda i=i, n=n: _take(budget, n, order, i))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while budget.waiting < i + 1:  # queued in this order
            assert time.monotonic() < deadline
            time.sleep(0.001)
    gate.__exit__(None, None, None)
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 3]


def _take(budget: ImageBudget, n: int, order: list[int], i: int) -> None:
    with budget.hold(n):
        order.append(i)
        time.sleep(0.01)
