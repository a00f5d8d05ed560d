"""Ids: UUIDs of the right version, ordered by time, never repeated, in a thread or a fork."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest

from turnstile_server import ids

IDS_PER_THREAD = 5_000
THREADS = 8


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Threads switch every microsecond instead of every 5 ms, so that they interleave inside
    the code that hands out random bytes."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_ids_are_uuids_of_their_version_and_new_ids_sort_by_time() -> None:
    made = [ids.new_id() for _ in range(1_000)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in made)
    assert made == sorted(made)
    random = uuid.UUID(ids.random_id())
    assert random.version == 4 and random.variant == uuid.RFC_4122


def test_ids_made_in_many_threads_at_once_never_repeat(frequent_switches: None) -> None:
    made: list[list[str]] = [[] for _ in range(THREADS)]
    start = threading.Barrier(THREADS)

    def make(into: list[str]) -> None:
        start.wait()
        for _ in range(IDS_PER_THREAD):
            into.append(ids.random_id())
            into.append(ids.new_id())

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for into in made for i in into]
    assert len(everything) == THREADS * IDS_PER_THREAD * 2
    assert len(set(everything)) == len(everything)


# In a process of its own: forking the test process, with its gRPC threads, is not safe.
_FORK = """
import os
from turnstile_server import ids
ids.random_id()  # the parent's pool now holds bytes it has not handed out yet
read, write = os.pipe()
child = os.fork()
if child == 0:
    os.write(write, ids.random_id().encode())
    os._exit(0)
os.close(write)
childs = os.read(read, 100).decode()
os.waitpid(child, 0)
print(childs, ids.random_id())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FORK], capture_output=True, text=True, timeout=30, check=True
    )
    childs, parents = done.stdout.split()
    assert childs != parents
