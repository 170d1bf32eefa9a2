"""Threads of the app: torch's thread count per running decode, the bridge that streams a decode running on a
thread of its own through a gradio generator, and loading off the main thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from queue import SimpleQueue

from .api import Gone, user_errors


def torch_threads(running: int, cores: int | None = None) -> int:
    """Torch threads for each of ``running`` decodes: all the cores for one alone, an equal share for several, so
    that (threads × running decodes) ≤ cores: two 2-thread torch jobs on 2 cores run many times slower than one
    (OpenMP threads spin while they wait for each other). ``MAVIS_THREADS`` fixes the number instead.

    >>> torch_threads(1, cores=2), torch_threads(2, cores=2), torch_threads(2, cores=16), torch_threads(3, cores=1)
    (2, 1, 8, 1)
    """
    if os.environ.get("MAVIS_THREADS"):
        return max(1, int(os.environ["MAVIS_THREADS"]))
    return max(1, (cores or os.cpu_count() or 1) // max(1, running))


class ThreadShare:
    """How many decodes are running, and the torch thread count that follows it (`torch_threads`): a user alone
    gets every core, and when a second request starts both drop to their share at their next step.

    `apply` runs in the thread that is about to decode, before each step: torch's thread setting belongs to the
    calling thread (a thread started later begins with the last count set anywhere), and gradio may resume a
    streaming handler on another worker thread each time. So what was set is remembered per thread: with one
    shared record, the first of two decodes never dropped to its share once the second had set the same count."""

    def __init__(self) -> None:
        self.lock, self.running, self.local = threading.Lock(), 0, threading.local()

    @contextmanager
    def decoding(self) -> Iterator[None]:
        with self.lock:
            self.running += 1
        try:
            self.apply()
            yield
        finally:
            with self.lock:
                self.running -= 1

    def apply(self) -> None:
        import torch  # imported here so `python app.py --help` stays instant

        threads = torch_threads(self.running)
        if threads != getattr(self.local, "threads", None):  # only on a change: asking torch every step cost seconds
            torch.set_num_threads(threads)
            self.local.threads = threads

    def follow(self, steps: Iterator):
        """``steps`` (a decode's stream), applying the current share before each step is taken; closing this
        closes ``steps`` too (a stopped generation frees its caches at once)."""
        try:
            while True:
                self.apply()
                try:
                    step = next(steps)
                except StopIteration:
                    return
                yield step
        finally:
            if hasattr(steps, "close"):
                steps.close()


THREADS = ThreadShare()


def in_background(work: Callable[[Callable[..., None]], None], endpoint: str) -> Iterator[tuple]:
    """Run ``work(report)`` in a thread and yield each tuple it reports, as it reports it, so that a generator
    listener streams work that only has callbacks (Engine.sweep). An error in ``work`` is raised here as
    `user_errors` makes it, and logged in the thread even when nobody reads on (a stopped sweep logs its stop).
    Once this iterator is closed (gradio closes it on Stop), the next ``report`` raises `Gone` in the thread."""
    messages, closed, end = SimpleQueue(), threading.Event(), object()

    def report(*message) -> None:
        if closed.is_set():
            raise Gone
        messages.put(message)

    def run() -> None:
        try:
            with user_errors(endpoint):
                work(report)
            messages.put((end, None))
        except BaseException as err:  # noqa: BLE001 - raised again in the reading thread
            messages.put((end, err))

    threading.Thread(target=run, name=f"mavis-{endpoint}", daemon=True).start()
    try:
        while (message := messages.get())[0] is not end:
            yield message
        if message[1] is not None:
            raise message[1]
    finally:
        closed.set()


def streamed(steps: Callable[[], Iterator], endpoint: str) -> Iterator:
    """Each item of ``steps()`` (a decode's stream), decoded on a thread that ends with it: gradio resumes a
    generator on whichever worker thread is free, torch stepped from changing threads ran a four-method request
    several times slower, and a worker thread that ran torch keeps an OpenMP pool that slows later decodes."""
    def work(report: Callable[..., None]) -> None:
        with THREADS.decoding():
            for item in THREADS.follow(steps()):
                report(item)

    for (item,) in in_background(work, endpoint):
        yield item


def off_main_thread(work: Callable[[], object]) -> object:
    """``work()`` in a thread that ends with it; its result, or its exception raised here.

    torch's OpenMP keeps a pool of worker threads for every thread that ran parallel work, for as long as that
    thread lives; once the main thread has one (from loading the stack), every decode on another thread runs
    slower on 2 cores: with more OpenMP threads than cores, libgomp stops letting idle workers spin between
    parallel regions (docs/benchmarks.md). Work done here leaves no pool."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="mavis-load") as pool:
        return pool.submit(work).result()
