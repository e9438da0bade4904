"""Engines stay loaded between jobs, one generation per engine at a time, and are closed."""

from __future__ import annotations

import threading
import time

from desktop_dpo.core.llm.engine_pool import EnginePool


class FakeEngine:
    def __init__(self, name: str, log: list[str]):
        self.name = name
        self.log = log
        self.closed = False
        log.append(f"load {name}")

    def close(self) -> None:
        self.closed = True
        self.log.append(f"close {self.name}")


def test_engine_is_loaded_once_and_reused():
    log: list[str] = []
    pool = EnginePool()
    with pool.acquire("m1", lambda: FakeEngine("m1", log)) as first:
        pass
    with pool.acquire("m1", lambda: FakeEngine("m1", log)) as second:
        assert second is first
    assert log == ["load m1"]
    pool.close_all()
    assert first.closed and log == ["load m1", "close m1"]


def test_least_recently_used_idle_engine_is_closed():
    log: list[str] = []
    pool = EnginePool(max_loaded=2)
    for name in ("a", "b", "a", "c"):
        with pool.acquire(name, lambda n=name: FakeEngine(n, log)):
            pass
    assert log == ["load a", "load b", "load c", "close b"]
    assert sorted(pool.loaded()) == ["a", "c"]
    pool.close_all()


def test_one_generation_per_engine_at_a_time():
    log: list[str] = []
    pool = EnginePool()
    inside = threading.Event()
    order: list[str] = []

    def first_job():
        with pool.acquire("m", lambda: FakeEngine("m", log)):
            order.append("first start")
            inside.set()
            time.sleep(0.2)
            order.append("first end")

    thread = threading.Thread(target=first_job)
    thread.start()
    inside.wait()
    with pool.acquire("m", lambda: FakeEngine("m", log)):
        order.append("second start")
    thread.join()
    assert order == ["first start", "first end", "second start"]
    pool.close_all()
