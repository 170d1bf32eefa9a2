"""The study admin's side: the token gate with its wrong-token limit, and private single-use exports."""

from __future__ import annotations

import math
import secrets
import shutil
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from mavis_core.study import token_ok

from .api import LOG, address, user_errors

ADMIN_TOKEN_ENV = "MAVIS_ADMIN_TOKEN"
ADMIN_FAILURES = (5, 600.0)  # wrong admin tokens per client address per 10 minutes before all its tries are refused
EXPORT_TTL_S = 300.0  # a study export not downloaded within this is deleted
EXPORT_PREFIX = "mavis-export-"  # its private folder in gradio's cache, named with an unguessable token


class Recent:
    """Timestamps of recent events per key (a client address, a session), to rate-limit them; thread-safe."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait(self, key: str, limit: tuple[int, float]) -> float:
        """Seconds until ``key`` may have another event under ``limit`` = (count, seconds); 0 if it may now."""
        count, seconds = limit
        with self._lock:
            times, now = self._times[key], time.monotonic()
            while times and times[0] <= now - seconds:
                times.popleft()
            if not times:
                del self._times[key]  # sessions come and go: keep no key without recent events
            return 0.0 if len(times) < count else times[0] + seconds - now

    def add(self, key: str) -> int:
        """Record an event of ``key``; returns how many it has in the window kept."""
        with self._lock:
            self._times[key].append(time.monotonic())
            return len(self._times[key])


class Exports:
    """Study CSV exports, each in its own folder (owner-only, named with an unguessable token) in gradio's cache,
    so gradio serves it without a copy. `Guard` serves it once, to whoever holds the link of the admin's response,
    and deletes it; one never fetched goes after EXPORT_TTL_S; folders left by an earlier run go at start."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._deadlines: dict[Path, float] = {}
        self._lock = threading.Lock()
        for old in cache.glob(f"{EXPORT_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)

    def new(self, name: str) -> Path:
        """A path for a new export file, in a fresh private folder."""
        self.purge()
        folder = self.cache / f"{EXPORT_PREFIX}{secrets.token_urlsafe(24)}"
        self.cache.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        with self._lock:
            self._deadlines[folder / name] = time.monotonic() + EXPORT_TTL_S
        return folder / name

    def owns(self, path: Path) -> bool:
        """Whether ``path`` is a live export (the link in an admin's response, not yet fetched)."""
        self.purge()
        with self._lock:
            return path in self._deadlines

    def remove(self, path: Path) -> None:
        with self._lock:
            self._deadlines.pop(path, None)
        shutil.rmtree(path.parent, ignore_errors=True)

    def purge(self, now: float | None = None) -> None:
        """Delete the exports whose time is up."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [p for p, deadline in self._deadlines.items() if deadline <= now]
        for path in expired:
            self.remove(path)


class Admin:
    """The admin token's gate: ``call`` runs an action for the admin only; an address with too many wrong tokens
    lately is refused whatever it sends (guessing is slow), and every wrong or refused try is logged."""

    def __init__(self, token: str | None, exports: Exports) -> None:
        self.token, self.exports, self.failures = token, exports, Recent()

    def check(self, token: str, request: gr.Request | None) -> None:
        """ValueError unless ``token`` is the admin token and this address may still try."""
        if not self.token:
            raise ValueError(f"Study results are disabled: set {ADMIN_TOKEN_ENV} on the server to enable them.")
        where = address(request)
        wait = self.failures.wait(where, ADMIN_FAILURES)
        if wait:
            raise ValueError(f"Too many wrong admin tokens from your address; try again in {math.ceil(wait / 60)} "
                             f"min.")
        if not token_ok(token, self.token):
            count = self.failures.add(where)
            LOG.warning("wrong admin token from %s (%d in the last %.0f s)", where, count, ADMIN_FAILURES[1])
            raise ValueError("Wrong admin token.")

    def call(self, endpoint: str, request: gr.Request | None, token: str, action: Callable[[], object]):
        """``action()`` for an admin whose token is right; every other caller gets `check`'s message."""
        with user_errors(endpoint):
            self.check(token, request)
            return action()

    def export(self, endpoint: str, request: gr.Request | None, token: str, write: Callable[[Path], Path],
               name: str) -> str:
        """A file ``write`` fills, for the admin who asked only: a single-use link, see `Exports`."""
        return self.call(endpoint, request, token, lambda: str(write(self.exports.new(name))))
