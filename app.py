"""MAVIS demo: steer a language model between objectives at inference time, live.

    python app.py [--stack PATH] [--host HOST] [--port PORT] [--study-db PATH]

This file only lays out the UI and wires events; the work happens in mavis_core (engine, study, plots).
Every action is a named API endpoint (see the "Use via API" link, or gradio_client). The server runs behind
`Guard`, which refuses oversized and malformed API calls and keeps any one client from filling the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from queue import SimpleQueue

import gradio as gr
import numpy as np
from starlette.middleware import Middleware

from mavis_core.config import METHOD_NAMES, DecodeConfig, sweep_jobs
from mavis_core.engine import (
    BEAMS_RANGE,
    BETA_RANGE,
    CANDIDATES_RANGE,
    MAX_PROMPT_CHARS,
    SEED_RANGE,
    TEMPERATURE_RANGE,
    TOP_K_RANGE,
    WEIGHT_RANGE,
    Engine,
    Reply,
    Settings,
    _number,
    clean_prompt,
    weight_grid,
)
from mavis_core.evaluation import standard_error
from mavis_core.plots import (
    TOKEN_VIEW_CSS,
    dark_template,
    explanation_html,
    pareto_figure,
    same_point,
    token_explanation,
)
from mavis_core.study import RATING_RANGE, StudyDB, token_ok

DEFAULT_STACK = "assets/stack.toml"
DEFAULT_STUDY_DB = "study.db"
ADMIN_TOKEN_ENV = "MAVIS_ADMIN_TOKEN"
CONCURRENCY = 2  # requests running the model at once, of every kind together; more only slows everyone on 2 vCPUs
MODEL_GROUP = "model"  # the one concurrency group of generate, sweep and study trials, so CONCURRENCY is the total
MODEL_WORK = {"concurrency_id": MODEL_GROUP, "concurrency_limit": CONCURRENCY}  # for the listeners that run the model
MAX_QUEUE = 64  # waiting requests beyond this are turned away at once rather than left to time out
MAX_JOBS_PER_SESSION = 2  # model requests queued or running per browser tab / API client; more are refused at once
MAX_JOBS_PER_ADDRESS = 16  # ... per client address (a quarter of the queue: one machine cannot fill it)
MAX_REQUEST_WORK = 32_768  # replies × samples (N or B) × tokens in one request: about a minute on 2 CPU cores
MAX_REQUEST_BYTES = 2**20  # per HTTP request body: a prompt is cut to its last 4,000 characters anyway
ADMIN_FAILURES = (5, 600.0)  # wrong admin tokens per client address per 10 minutes before all its tries are refused
TRIALS_PER_SESSION = (3, 60.0)  # study trials per session per minute: a person reads and rates for longer than that
TRIALS_PER_ADDRESS = (60, 600.0)  # study trials per client address per 10 minutes (a lab behind one address: raise)
EXPORT_TTL_S = 300.0  # a study export not downloaded within this is deleted
EXPORT_PREFIX = "mavis-export-"  # its private folder in gradio's cache, named with an unguessable token
STREAM_INTERVAL_S = 0.05  # at most ~20 UI updates a second while streaming
MAX_HISTORY = 400  # samples kept per user for the chart
STUDY_SETTINGS = {"top_k": 15, "temperature": 1.0, "max_new_tokens": 64}  # and the stack's β (Engine.default_beta)
NO_Z = "none (2-D)"
SEARCH_CHOICES = [("sample", "sample"), ("best-of-N", "best_of_n"), ("beam search", "beam")]
SEARCH_DEFAULTS = ("sample", 4, 4)  # search, N, B: what API callers that leave them out get
SWEEP_MODES = ("chart axes (11 λ points)", "all objectives (simplex grid)")
SWEEP_PROMPTS_RANGE = (1, 8)  # prompts per λ point: the typed one, then the stack's first example prompts
SWEEP_SEEDS_RANGE = (1, 8)  # seeds per λ point: the seed box's, then the next ones
SWEEP_UPDATE_S = 2.0  # a running sweep sends its progress (and the chart, when points came) at most this often
API_OPTIONAL = {"sweep": 2}  # trailing values an API call may leave out (options added later): their defaults
GENERATING_NOTE = "Generating… every reply appears here token by token once it is done."
FILLED_BY_GRADIO = ("request", "progress")  # listener parameters gradio fills itself: no component behind them
CSS = """
.reply textarea { font-size: 15px !important; }
#details { padding: 4px 8px; }
.rating .wrap { gap: 4px !important; flex-wrap: nowrap !important; }
.rating label { padding: 4px 8px !important; min-width: 0 !important; }
#copy-link[data-copied]::after { content: "\\00a0✓ copied"; }
#token-view { overflow: visible !important; }
#notice:empty, #notice .prose:empty { display: none; }
@media (max-width: 720px) {  /* a phone: prompt and Generate, then the replies, then the settings, then the chart */
  #gen-side, #gen-main { display: contents; }
  #gen-top { order: 1; } #gen-replies { order: 2; } #gen-settings { order: 3; } #gen-chart { order: 4; }
  #gen-top, #gen-replies, #gen-settings, #gen-chart { flex: 1 1 100%; min-width: 100% !important; }
}
""" + TOKEN_VIEW_CSS
SHARE_PROMPT_BYTES = 6000  # a prompt longer than this (URL-encoded) is left out of the share link: the page sends
# its query string with every request, and servers refuse request lines of some 8-16 kB
# Run once when the page loads: a click on a chart point writes "<sample id>:<click time>" (the id is the trace's
# customdata; the time makes a second click on the point a change too) into the hidden #point-pick box, whose
# change event shows that sample; in a dark page the chart swaps in the dark template after each draw (gradio draws
# the server's figure with Plotly.react into the same div, so the listeners stay).
PAGE_JS = """() => {
  const DARK = DARK_TEMPLATE;
  const isDark = () => document.body.classList.contains("dark")
    || document.documentElement.classList.contains("dark");
  const pick = (id) => {
    const box = document.querySelector("#point-pick textarea");
    if (!box || id === undefined || id === null) return;
    box.value = id + ":" + Date.now();
    box.dispatchEvent(new Event("input", {bubbles: true}));
  };
  const wire = (gd) => {
    if (gd.mavisWired || typeof gd.on !== "function") return;
    gd.mavisWired = true;
    gd.on("plotly_click", (event) => pick(event && event.points && event.points.length
      ? event.points[0].customdata : null));
    const theme = () => {
      if (!isDark() || !window.Plotly || gd.mavisLayout === gd.layout) return;
      gd.mavisLayout = gd.layout;
      window.Plotly.relayout(gd, {template: DARK});
    };
    gd.on("plotly_afterplot", theme);
    theme();
  };
  const scan = () => document.querySelectorAll("#pareto .js-plotly-plot").forEach(wire);
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
  scan();
}""".replace("DARK_TEMPLATE", json.dumps(dark_template()))
# "Copy link": the address bar is the share link already (see share_js); the button flashes "copied".
COPY_JS = """() => {
  const url = window.location.href;
  const button = document.querySelector("#copy-link");
  const done = () => {
    if (!button) return;
    button.dataset.copied = "1";
    setTimeout(() => delete button.dataset.copied, 2000);
  };
  const ask = () => window.prompt("Copy this link:", url);
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).then(done, ask);
  else ask();
}"""
LOG = logging.getLogger("mavis.app")


class Gone(Exception):
    """The client of a running request disconnected (or cancelled it): stop working for nobody."""


@contextmanager
def user_errors(endpoint: str) -> Iterator[None]:
    """Show a ValueError from mavis_core as a plain gr.Error (a modal), never a stack trace; log one line."""
    try:
        yield
    except gr.Error:
        raise  # made (and logged) already: by a nested user_errors, e.g. in_background's thread
    except ValueError as err:
        LOG.warning("refused /%s: %s", endpoint, err)
        raise gr.Error(str(err), print_exception=False) from None
    except Gone:
        LOG.warning("stopped /%s: its client is gone", endpoint)
        raise gr.Error("Stopped: the client disconnected.", print_exception=False) from None


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


def _problem(check: Callable, *values) -> str:
    """What ``check(*values)`` refuses (its ValueError's message); "" when it accepts them."""
    try:
        check(*values)
    except ValueError as err:
        return str(err)
    return ""


def _literal(text: str) -> str:
    """``text`` for a Markdown component to show as it is: every ASCII punctuation mark backslash-escaped (a
    reply's backslash or "*" would otherwise be read as Markdown).

    >>> print(_literal("2*3 is 6_"))
    2\\*3 is 6\\_
    """
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def _count(n: int, noun: str) -> str:
    """``n`` and its noun, plural unless one.

    >>> _count(1, "seed"), _count(3, "prompt")
    ('1 seed', '3 prompts')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: every (prompt, seed) round runs the methods over the λ grid; ``line`` says in words what
    it varies and holds."""

    settings: Settings
    methods: list[str]
    grid: list[list[float]]
    rounds: list[tuple[str, int]]  # prompt-major: prompt i with each seed in turn
    prompts: int
    seeds: int
    line: str
    morlhf: tuple[tuple[float, ...], ...] = ()  # λ points MORLHF was fine-tuned for (`Stack.morlhf_points`)

    @property
    def keys(self) -> list[tuple]:
        """(method, *λ) of every point, in the order Engine.sweep runs them (the base once: it ignores λ;
        MORLHF only where it was trained)."""
        return [(m, *(self.grid[0] if lam is None else lam)) for m, lam in sweep_jobs(self.methods, self.grid,
                                                                                         self.morlhf)]


def _choices(component) -> list:
    return [value for _, value in component.choices]


def _field(component, name: str | None) -> str:
    """How a message names an input: its API parameter name (as in view_api) and its label, when they differ."""
    label = str(component.label)
    if not name:
        return repr(label)
    return name if name.replace("_", " ").lower() == label.lower() else f"{name} ({label!r})"


def _typed(component, value: object, field: str) -> object:
    """``value`` if its JSON type fits ``component``; a ValueError naming the field and what it takes otherwise
    (gradio's own preprocess fails on a wrong type with a bare TypeError, which reaches a client as no message)."""
    if isinstance(component, (gr.Slider, gr.Number)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            low, high = component.minimum, component.maximum  # the range itself is the component's to check
            _number(field, value, -math.inf if low is None else low, math.inf if high is None else high)
    elif isinstance(component, gr.CheckboxGroup):
        if not isinstance(value, list) or any(isinstance(v, (list, dict)) for v in value):
            raise ValueError(f"{field} must be a list of choices from {_choices(component)}, got {value!r:.60}")
    elif isinstance(component, gr.Textbox):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{field} must be text, got {type(value).__name__}")
    elif isinstance(value, (list, dict)):  # a Radio or single Dropdown takes one choice
        raise ValueError(f"{field} must be one of {_choices(component)}, got {value!r:.60}")
    return value


def _read(components: list, values: list, names: list[str]) -> list:
    """Raw API values through a type check and then their component's own preprocess (range, choices);
    ``names``: the listener's parameter names of the first values (the rest, ``*args``, have none)."""
    out = []
    for i, (component, value) in enumerate(zip(components, values, strict=True)):
        if isinstance(component, gr.State):
            out.append(value)
            continue
        field = _field(component, names[i] if i < len(names) else None)
        try:
            out.append(component.preprocess(_typed(component, value, field)))
        except gr.Error as err:  # gradio's message says what is wrong, not which field
            raise ValueError(f"{field}: {err.message}") from None
    return out


def checked(fn: Callable, inputs: list, endpoint: str) -> Callable:
    """``fn`` as a listener wired with ``preprocess=False``: every value is read by `_read` first, so a wrong type
    over the API gets a gr.Error naming its field. Parameters named in FILLED_BY_GRADIO pass through untouched."""
    names = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    filled = {i for i, name in enumerate(names) if name in FILLED_BY_GRADIO}
    value_names = [name for i, name in enumerate(names) if i not in filled]

    def read(args: tuple) -> list:
        with user_errors(endpoint):
            values = iter(_read(inputs, [a for i, a in enumerate(args) if i not in filled], value_names))
        return [a if i in filled else next(values) for i, a in enumerate(args)]

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def listener(*args):
            yield from fn(*read(args))
    else:
        @functools.wraps(fn)
        def listener(*args):
            return fn(*read(args))
    return listener


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


def _refusal(message: str, field: str = "request") -> tuple[int, dict]:
    """A refused API call in gradio's own validation format: gradio_client raises it as a ValidationError that
    carries ``message``, and the page shows it on the event's first input; raw clients read "error"."""
    detail = [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": field}]
    return 422, {"detail": detail, "error": message}


async def _body(scope: dict, receive: Callable) -> bytes | None:
    """The request body, or None once it is over MAX_REQUEST_BYTES: refused by its Content-Length before reading,
    or as soon as the chunks read pass the limit (a chunked upload has none), so it is never held in memory."""
    length = dict(scope["headers"]).get(b"content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_REQUEST_BYTES:
            return None
        more = message["type"] == "http.request" and message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    """``receive`` for the app behind: the body already read, then the client's own messages (its disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return replay


def _json(body: bytes) -> dict | None:
    """The JSON object of a call's body, or None."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _completed(fn, scope: dict, body: bytes) -> tuple[dict, bytes]:
    """A call to ``fn`` that leaves out some of its last API_OPTIONAL values, with their defaults filled in (gradio
    wants every value), so callers from before those options existed keep working."""
    payload, optional = _json(body), API_OPTIONAL.get(fn.api_name, 0)
    data = payload.get("data") if payload else None
    if not optional or not isinstance(data, list):
        return scope, body
    for full in (len(fn.inputs), len([c for c in fn.inputs if not c.skip_api])):
        if full - optional <= len(data) < full:
            payload["data"] = data + [c.value for c in fn.inputs[len(data) - full:]]
            body = json.dumps(payload).encode()
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            return {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}, body
    return scope, body


async def _answer(send: Callable, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of gradio's routes (installed by `Demo.launch`). It refuses, each with a message
    and one log line, before gradio reads or queues anything:

    - a request body over MAX_REQUEST_BYTES, and every upload (the app has no upload component);
    - a call to an unknown endpoint, or with the wrong number of values (gradio answers those with no message);
    - a model request from a session with MAX_JOBS_PER_SESSION, or an address with MAX_JOBS_PER_ADDRESS, already
      queued or running, so no one client can fill the shared queue;
    - a file of gradio's cache that is not a live study export (an earlier run's, or one already downloaded);
      an export is deleted once it has been served.
    """

    CALLS = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")

    def __init__(self, app: Callable, demo: Demo) -> None:
        self.app, self.demo = app, demo
        # Held from the check of a model call until gradio has queued it (milliseconds): calls arriving together
        # would otherwise all pass the count before any of them is in the queue.
        self._admitting = asyncio.Lock()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if "/gradio_api/file=" in path:
            return await self._file(Path(os.path.realpath(path.split("/gradio_api/file=", 1)[1])), scope, receive,
                                    send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        call = next((route for route in self.CALLS if route in path), None)
        if path.endswith("/gradio_api/upload"):
            return await self._refuse(scope, send, 413, {"error": "This app takes no file uploads."})
        body = await _body(scope, receive)
        if body is None:
            message = (f"The request is over {MAX_REQUEST_BYTES / 2**20:g} MB, the most this app takes (a prompt is "
                       f"cut to its last {MAX_PROMPT_CHARS:,} characters anyway).")
            return await self._refuse(scope, send, *(_refusal(message) if call else (413, {"error": message})))
        fn = self._fn(path, call, body) if call else None
        if fn is not None:
            scope, body = _completed(fn, scope, body)
        async with self._admitting if fn is not None and fn.concurrency_id == MODEL_GROUP else nullcontext():
            refusal = self._check_call(path, fn, body, scope) if call else None
            if refusal:
                return await self._refuse(scope, send, *refusal)
            await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: dict, send: Callable, status: int, payload: dict) -> None:
        LOG.warning("refused %s %s from %s: %s", scope["method"], scope["path"][:120], (scope.get("client") or "?")[0],
                    payload["error"])
        await _answer(send, status, payload)

    def _fn(self, path: str, route: str, body: bytes):
        """The event a call names: by fn_index (the page, gradio_client) or by its api_name (the REST routes)."""
        payload = _json(body) or {}
        name = path.split(route, 1)[1].strip("/").removeprefix("v2/") if route != self.CALLS[0] else "predict"
        if name == "predict":
            return self.demo.fns.get(payload.get("fn_index")) if isinstance(payload.get("fn_index"), int) else None
        return next((fn for fn in self.demo.fns.values() if fn.api_name == name), None)

    def _check_call(self, path: str, fn, body: bytes, scope: dict) -> tuple[int, dict] | None:
        payload = _json(body)
        if payload is None:
            return None  # not a JSON object: gradio's own 422 says so
        if fn is None:
            names = sorted(f"/{f.api_name}" for f in self.demo.fns.values()
                           if f.api_name and f.api_visibility == "public")
            what = f"fn_index {payload.get('fn_index')!r:.20}" if "fn_index" in payload else path
            message = f"No such endpoint: {what}; this app has {', '.join(names)}."
            return 404, {"detail": message, "error": message}
        data, api_inputs = payload.get("data"), [c for c in fn.inputs if not c.skip_api]
        if isinstance(data, list) and len(data) not in (len(fn.inputs), len(api_inputs)):
            labels = ", ".join(str(c.label) for c in api_inputs)
            return _refusal(f"/{fn.api_name} takes {len(api_inputs)} values ({labels}), got {len(data)}.", "data")
        if fn.concurrency_id == MODEL_GROUP:
            return self._check_load(payload.get("session_hash"), (scope.get("client") or ("unknown",))[0])
        return None

    def _check_load(self, session: str | None, address: str) -> tuple[int, dict] | None:
        """A refusal when this session or address already has its share of model requests queued or running."""
        events = [e for e in list(self.demo._queue.event_ids_to_events.values()) if e.fn.concurrency_id == MODEL_GROUP]
        mine = sum(e.session_hash == session for e in events) if session else 0
        if mine >= MAX_JOBS_PER_SESSION:
            return _refusal(f"{mine} of your requests are already queued or running, the most one session may "
                            f"have; wait for one to finish (or stop it), then try again.", "queue")
        here = sum(e.request is not None and e.request.client is not None and e.request.client.host == address
                   for e in events)
        if here >= MAX_JOBS_PER_ADDRESS:
            return _refusal(f"{here} requests from your address are already queued or running, the most one address "
                            f"may have; try again when one has finished.", "queue")
        return None

    async def _file(self, target: Path, scope: dict, receive: Callable, send: Callable) -> None:
        """Gradio's file route for ``target``: within gradio's cache only a live export, deleted once served."""
        exports = self.demo.exports
        if not target.is_relative_to(exports.cache):
            return await self.app(scope, receive, send)  # gradio's static files, under its own rules
        if not exports.owns(target):
            return await self._refuse(scope, send, 404, {"error": "No such file (a study export can be downloaded "
                                                                  "once: export again)."})
        status = {}

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if scope["method"] == "GET" and status.get("code") == 200:
            exports.remove(target)


class Demo(gr.Blocks):
    """gr.Blocks whose server always runs behind `Guard`, with gradio's own upload size limit set as well;
    ``exports`` holds its study exports (set by build_demo)."""

    exports: Exports

    def launch(self, *args, **kwargs):
        kwargs.setdefault("max_file_size", MAX_REQUEST_BYTES)
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("js", PAGE_JS)
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(Guard, demo=self)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)


def _stats(reply: Reply | None, objectives: list[str], seed: int) -> str:
    """A column's line under its reply: the search and seed that made it, then its scores and KL."""
    if reply is None:
        return "*not selected*"
    if reply.scores is None:
        return (f"*{reply.search}: {'done, scoring' if reply.done else 'generating'}… {len(reply.events)} tokens "
                f"· seed {seed}*")
    cells = " · ".join(f"{k} **{reply.scores[k]:+.3f}**" for k in objectives)
    return f"*{reply.search}* · seed {seed} · {cells} · KL **{reply.kl:.2f}** · {len(reply.events)} tokens"


def _samples(replies: list[Reply], prompt: str, settings: Settings, source: str, start: int,
             weights: list[dict[str, float]] | None = None) -> list[dict]:
    """Chart samples (plain dicts, see mavis_core.plots) for scored replies."""
    total = sum(settings.weights.values())
    lam = {k: v / total for k, v in settings.weights.items()}
    return [{"id": start + i, "source": source, "method": r.method, "prompt": prompt, "text": r.text,
             "weights": weights[i] if weights else lam, "beta": settings.beta, "seed": settings.seed,
             "scores": r.scores, "kl": r.kl, "search": r.search} for i, r in enumerate(replies)]


def _sample_choices(history: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{s['id']} {s['method']} ({s['source']}, {s.get('search', 'sample')}) λ "
             + ", ".join(f"{v:.2f}" for v in s["weights"].values()), s["id"]) for s in reversed(history)]


def _next_id(history: list[dict]) -> int:
    return history[-1]["id"] + 1 if history else 1


def _address(request: gr.Request | None) -> str:
    """The client address (uvicorn takes it from X-Forwarded-For only when the proxy is in FORWARDED_ALLOW_IPS)."""
    client = getattr(request, "client", None)
    return client.host if client else "unknown"


class Actions:
    """The event handlers: each turns UI / API values into mavis_core calls and back into UI values.

    Handlers that take ``request`` get it from gradio (never from a component): it names the session and the
    client address for the rate limits, and lets long requests stop once their client is gone.
    """

    def __init__(self, engine: Engine, study: StudyDB, admin_token: str | None, exports: Exports) -> None:
        self.engine, self.study, self.admin_token, self.exports = engine, study, admin_token, exports
        self.queue = None  # gradio's queue, set by build_demo: its events say whose request is still wanted
        self.admin_failures, self.trials = Recent(), Recent()
        self.stops: dict[str, float] = {}  # session -> when its Stop was last pressed (a sweep's thread reads it)

    def _settings(self, weights: tuple, beta, top_k, temperature, max_new_tokens, seed,
                  search: tuple = SEARCH_DEFAULTS) -> Settings:
        if len(weights) != len(self.engine.objectives):
            raise ValueError(f"expected {len(self.engine.objectives)} weights, got {len(weights)}")
        return self.engine.settings(dict(zip(self.engine.objectives, weights, strict=True)), beta, top_k,
                                    temperature, max_new_tokens, seed, *search)

    def _split(self, values: tuple) -> tuple[tuple, tuple]:
        """The trailing inputs of generate / check: one weight per objective, then search, N and B (optional, so
        API callers from before search existed keep working)."""
        n = len(self.engine.objectives)
        weights, search = values[:n], values[n:]
        if len(search) > len(SEARCH_DEFAULTS):
            raise ValueError(f"expected {n} weights then search, N and B; got {len(values)} values")
        return weights, tuple(search) + SEARCH_DEFAULTS[len(search):]

    def _prompt(self, prompt: str, max_new_tokens: int) -> str:
        prompt, warnings = clean_prompt(prompt)
        for message in warnings + self.engine.prompt_warnings(prompt, max_new_tokens):
            gr.Warning(message)
        return prompt

    def _check_work(self, replies: int, settings: Settings) -> None:
        """ValueError when one request asks for more than MAX_REQUEST_WORK token steps (replies × samples × tokens)."""
        samples = {"sample": 1, "best_of_n": settings.num_candidates, "beam": settings.num_beams}[settings.search]
        work = replies * samples * settings.max_new_tokens
        if work > MAX_REQUEST_WORK:
            raise ValueError(f"This request is too much work for a shared server: {replies} replies × {samples} "
                             f"samples × {settings.max_new_tokens} tokens = {work:,} token steps; the limit is "
                             f"{MAX_REQUEST_WORK:,}. Use fewer tokens, a smaller N or B, fewer methods, fewer "
                             f"prompts or seeds per λ point, or sweep over the chart axes instead of all objectives.")

    def _gone(self, request: gr.Request | None, endpoint: str) -> bool:
        """Whether the client of this running request disconnected or cancelled it: gradio marks its event dead
        (or drops it); the work in between would be for nobody."""
        if request is None or self.queue is None:
            return False
        events = [e for e in list(self.queue.event_ids_to_events.values())
                  if e.session_hash == request.session_hash and e.fn.api_name == endpoint]
        return not events or all(not e.alive or e.closed for e in events)

    def normalise(self, *weights: float) -> str:
        with user_errors("normalise"):
            if len(weights) != len(self.engine.objectives):
                raise ValueError(f"expected {len(self.engine.objectives)} weights, got {len(weights)}")
            lam = self.engine.normalised(dict(zip(self.engine.objectives, weights, strict=True)))
        if not any(lam.values()):
            return "**λ = all zero** — raise at least one slider"
        return "**normalised λ:** " + " · ".join(f"{k} {v:.2f}" for k, v in lam.items())

    def _check_generate(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, x, y, z,
                        *rest) -> None:
        weights, search = self._split(rest)
        settings = self._settings(weights, beta, top_k, temperature, max_new_tokens, seed, search)
        self._check_work(len(self.engine.check_methods(methods)), settings)
        self._check_axes(x, y, z)
        clean_prompt(prompt)

    def check(self, *values) -> None:
        """The browser's check before a generate: a mistake stops it there and `notice` shows it under the button,
        in place of toasts that pile up (the endpoint checks again, for API callers)."""
        problem = _problem(self._check_generate, *values)
        if problem:
            raise gr.Error(problem, visible=False, print_exception=False)

    def notice(self, *values) -> str:
        """The line under Generate: what is wrong with the request, or nothing."""
        problem = _problem(self._check_generate, *values)
        return f"⚠️ {problem}" if problem else ""

    def axes_notice(self, x: str, y: str, z: str) -> str:
        """The line under the axis menus: why the chart was not redrawn, or nothing."""
        problem = _problem(self._check_axes, x, y, z)
        return f"⚠️ {problem}; the chart keeps its last axes." if problem else ""

    def check_axes(self, x: str, y: str, z: str) -> None:
        """The browser's check before a redraw: axes refused stop it, quietly (`axes_notice` says why)."""
        problem = _problem(self._check_axes, x, y, z)
        if problem:
            raise gr.Error(problem, visible=False, print_exception=False)

    def _check_axes(self, x: str, y: str, z: str = NO_Z) -> None:
        """ValueError naming the field unless x, y (and z, when not "none") are different objectives."""
        objectives = self.engine.objectives
        if not {x, y} <= set(objectives) or z not in (NO_Z, *objectives):
            raise ValueError(f"chart axes must be objectives of this stack: {objectives}")
        if x == y:
            raise ValueError(f"y ('y axis') is {y!r}, the same as x ('x axis'): pick two different objectives for "
                             f"the chart")
        if z in (x, y):
            raise ValueError(f"z ('z axis (3-D view)') is {z!r}, already on the {'x' if z == x else 'y'} axis: pick "
                             f"a third objective, or {NO_Z!r}")

    def check_study(self, participant: str, prompt: str) -> None:
        with user_errors("check_study"):
            if (prompt or "").strip() or not self.engine.examples:
                clean_prompt(prompt)

    def generate(self, request: gr.Request, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, x, y,
                 z, history, *rest):
        """Stream every ticked method side by side; then add the scored replies to the chart.

        ``rest``: one weight per objective, then optionally search ("sample", "best_of_n", "beam"), N and B.
        A client that disconnects stops it: gradio stops asking for the next update.
        """
        with user_errors("generate"):
            weights, search = self._split(rest)
            settings = self._settings(weights, beta, top_k, temperature, max_new_tokens, seed, search)
            methods = self.engine.check_methods(methods)
            self._check_work(len(methods), settings)
            self._check_axes(x, y, z)
            prompt = self._prompt(prompt, settings.max_new_tokens)
            # The last reply's columns and per-token view go at once; the view fills in when the replies are done.
            started = [Reply(m, search=settings.search_label) for m in methods]
            yield self._columns(started, settings.seed) + [
                explanation_html({}, self.engine.objectives, note=GENERATING_NOTE), gr.skip(), gr.skip(), gr.skip()]
            last = time.monotonic()

            def decode(report: Callable[..., None]) -> None:
                # Every step on one thread of its own: gradio resumes a generator on whichever worker thread is
                # free, and torch stepped from changing threads ran a 16-token, four-method request 4× slower.
                for replies in THREADS.follow(self.engine.stream(prompt, methods, settings)):
                    report(replies)

            with THREADS.decoding():
                for (replies,) in in_background(decode, "generate"):
                    done = replies[0].scores is not None
                    if done or time.monotonic() - last >= STREAM_INTERVAL_S:
                        last = time.monotonic()
                        yield self._columns(replies, settings.seed) + ([gr.skip()] * 4 if not done else
                                                                       self._finish(replies, prompt, settings,
                                                                                    (x, y, z), history))

    def _columns(self, replies: list[Reply], seed: int) -> list:
        by_method = {r.method: r for r in replies}
        texts = [by_method[m].text if m in by_method else "" for m in self.engine.methods]
        stats = [_stats(by_method.get(m), self.engine.objectives, seed) for m in self.engine.methods]
        return texts + stats

    def _finish(self, replies, prompt, settings, axes, history) -> list:
        history = (history + _samples(replies, prompt, settings, "generate", _next_id(history)))[-MAX_HISTORY:]
        explanation = explanation_html({r.method: token_explanation(r.events) for r in replies},
                                       self.engine.objectives, METHOD_NAMES)
        new = history[-len(replies):]
        newest = next((x["id"] for x in new if x["method"] == "mavis"), new[0]["id"])  # MAVIS is the one to read
        return [explanation, self._figure(history, *axes), history,
                gr.Dropdown(choices=_sample_choices(history), value=newest)]

    def _figure(self, history: list[dict], x: str, y: str, z: str = NO_Z):
        """The Pareto chart of ``history``: 2-D, or 3-D when ``z`` names a third objective."""
        self._check_axes(x, y, z)
        return pareto_figure(history, x, y, self.engine.methods + self.engine.references, z=None if z == NO_Z else z)

    def redraw(self, x: str, y: str, z: str, history: list[dict]):
        with user_errors("redraw"):
            return self._figure(history, x, y, z)

    def clear(self, x: str, y: str, z: str):
        with user_errors("clear"):
            return self._figure([], x, y, z), [], gr.Dropdown(choices=[], value=None), ""

    def show_sample(self, sample_id, history: list[dict]) -> str:
        """The chosen sample's text, weights and scores, and which other samples share its point on the chart
        (a click reaches only the top one of them).

        Wired with preprocess=False, unchecked: the dropdown's choices change per session, so the id is checked
        here against this user's own chart."""
        with user_errors("show_sample"):
            if sample_id is not None and (isinstance(sample_id, bool) or not isinstance(sample_id, int)):
                raise ValueError(f"sample_id must be the number of a sample on your chart, got {sample_id!r:.60}")
        match = [s for s in history if s["id"] == sample_id]
        if not match:
            return ""
        s, se = match[0], match[0].get("se")
        scores = " · ".join(f"{k} **{v:+.3f}**" + (f" ± {se[k]:.3f}" if se else "") for k, v in s["scores"].items())
        if se:
            scores += (f" · mean of {s['n']} replies (prompts × seeds) ± standard error; the reply shown is the "
                       f"first of them")
        weights = " · ".join(f"{k} {v:.2f}" for k, v in s["weights"].items())
        quoted = "\n".join("> " + _literal(line) for line in (s["text"] or "(empty reply)").splitlines())
        others = same_point(s, history)
        shared = ("" if not others else "\n\n*Same point on the chart:* "
                  + ", ".join(f"#{o['id']} {o['method']}" for o in others[:12])
                  + (" …" if len(others) > 12 else "") + " (pick them in the list)")
        return (f"**#{s['id']} {s['method']}** ({s['source']}, {s.get('search', 'sample')}) · λ: {weights} · "
                f"β {s['beta']} · seed {s['seed']}"
                f"\n\n{scores} · KL **{s['kl']:.2f}**{shared}\n\n**Prompt:** {s['prompt']}\n\n{quoted}")

    def pick_point(self, point: str, history: list[dict]):
        """A click on a chart point ("<sample id>:<click time>", written into the hidden box by PAGE_JS): the
        "Show sample" list moves to that sample, which shows it; anything but a sample on this chart is ignored."""
        ids = {s["id"] for s in history}
        text = point.split(":")[0].strip() if isinstance(point, str) else ""
        if not (text.isdigit() and len(text) < 12 and int(text) in ids):
            return gr.skip()
        return gr.update(value=int(text))  # the list's choices stay as they are

    def new_seed(self, fresh: bool):
        """The seed for the next Generate: a fresh random one when "new seed each time" is ticked."""
        return random.SystemRandom().randint(*SEED_RANGE) if fresh is True else gr.skip()

    def restore(self, request: gr.Request) -> list:
        """On page load: the controls a share link (the page's query string) sets, in `share_keys` order then
        "new seed each time"; what the link does not set, or sets wrongly, keeps its default."""
        params = dict(getattr(request, "query_params", None) or {})
        values = settings_from_query(params, self.engine)
        return [values.get(key, gr.skip()) for key in [*share_keys(self.engine.objectives), "new_seed"]]

    def _sweep_plan(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x, y, z, search,
                    num_candidates, num_beams, prompts_per_point, seeds_per_point, warn: bool = False) -> SweepPlan:
        """A sweep's request checked and laid out in rounds; ValueError for anything wrong, too much work included.
        ``warn``: show gr.Warning for a prompt that was cut (the sweep itself; its browser check stays quiet)."""
        objectives = self.engine.objectives
        settings = self._settings((1.0,) * len(objectives), beta, top_k, temperature, max_new_tokens, seed,
                                  (search, num_candidates, num_beams))
        methods = self.engine.check_methods(methods) + self.engine.references
        prompt = self._prompt(prompt, settings.max_new_tokens) if warn else clean_prompt(prompt)[0]
        if mode not in SWEEP_MODES:
            raise ValueError(f"sweep mode must be one of {list(SWEEP_MODES)}, got {mode!r}")
        self._check_axes(x, y, z)
        pair = (objectives.index(x), objectives.index(y)) if mode == SWEEP_MODES[0] else None
        grid = weight_grid(len(objectives), axes=pair)
        n_prompts = _number("prompts per λ point", prompts_per_point, *SWEEP_PROMPTS_RANGE, integer=True)
        n_seeds = _number("seeds per λ point", seeds_per_point, *SWEEP_SEEDS_RANGE, integer=True)
        prompts = [prompt, *[p for p in self.engine.examples if p != prompt]]
        if n_prompts > len(prompts):
            raise ValueError(f"prompts per λ point is {n_prompts}, but this stack has only {len(prompts)} prompts to "
                             f"use (the one typed and {len(prompts) - 1} example prompts); use at most {len(prompts)}.")
        if settings.search == "beam":
            n_seeds = 1  # beam search draws nothing at random: every seed gives the same reply
        step = settings.num_candidates if settings.search == "best_of_n" else 1  # best-of-N: no candidate twice
        seeds = [(settings.seed + i * step) % (SEED_RANGE[1] + 1) for i in range(n_seeds)]
        morlhf = tuple(self.engine.stack.morlhf_points)
        line = self._sweep_line(settings, grid, pair, n_prompts, seeds, int(seeds_per_point))
        trained = sum(m == "morlhf" for m, _ in sweep_jobs(methods, grid, morlhf))
        if trained:
            line += (f" MORLHF: the policy fine-tuned for exactly that preference, at the {_count(trained, 'λ point')}"
                     " it was trained for.")
        plan = SweepPlan(settings, methods, grid, [(p, s) for p in prompts[:n_prompts] for s in seeds], n_prompts,
                         n_seeds, line, morlhf)
        self._check_work(len(plan.keys) * len(plan.rounds), settings)
        return plan

    def _sweep_line(self, settings: Settings, grid: list, pair: tuple[int, int] | None, n_prompts: int,
                    seeds: list[int], asked_seeds: int) -> str:
        """One line: what a sweep varies (λ over which grid) and what it holds (the current decoding settings)."""
        objectives = self.engine.objectives
        if pair:
            others = [k for i, k in enumerate(objectives) if i not in pair]
            varies = (f"λ from {objectives[pair[1]]} only to {objectives[pair[0]]} only, {len(grid)} points"
                      + (f" ({', '.join(others)} at 0)" if others else ""))
        else:
            varies = f"λ over the simplex of {', '.join(objectives)}, {len(grid)} points"
        beam = " (beam search draws nothing at random: one seed)" if asked_seeds > len(seeds) else ""
        return (f"**Varies** {varies} · **holds** β {settings.beta:g}, top-k {settings.top_k}, temperature "
                f"{settings.temperature:g}, {settings.max_new_tokens} tokens, {settings.search_label} · "
                f"**per point** {_count(n_prompts, 'prompt')} × {_count(len(seeds), 'seed')} "
                f"(seed {', '.join(map(str, seeds))}){beam}; the weight sliders are not used.")

    def check_sweep(self, *values) -> None:
        """The browser's check before a sweep: a mistake stops it, shown by `sweep_notice` beside the chart."""
        problem = _problem(self._sweep_plan, *values)
        if problem:
            raise gr.Error(problem, visible=False, print_exception=False)

    def sweep_notice(self, *values) -> str:
        """The sweep status beside the chart when the Sweep button is pressed: what is wrong, or what will run."""
        try:
            plan = self._sweep_plan(*values)
        except ValueError as err:
            return f"⚠️ **Not swept:** {err}"
        return f"**Sweep queued…**\n\n{plan.line}"

    def sweep(self, request: gr.Request, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x,
              y, z, history, search=SEARCH_DEFAULTS[0], num_candidates=SEARCH_DEFAULTS[1],
              num_beams=SEARCH_DEFAULTS[2], prompts_per_point=1, seeds_per_point=1):
        """Every ticked method over a λ grid with the chosen search, each point from prompts × seeds (drawn at
        their mean with standard errors): yields the progress and the chart as points arrive, at most every
        SWEEP_UPDATE_S, then the whole. Stops at the next step once its client is gone or it is stopped."""
        with user_errors("sweep"):
            plan = self._sweep_plan(prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x, y, z,
                                    search, num_candidates, num_beams, prompts_per_point, seeds_per_point, warn=True)
            got: dict[tuple, list[Reply]] = {key: [] for key in plan.keys}
            steps = plan.settings.max_new_tokens if plan.settings.search == "sample" else len(plan.keys)
            start, began, where = _next_id(history), time.monotonic(), (0, -1, steps)
            yield gr.skip(), gr.skip(), gr.skip(), self._sweep_progress(plan, got, where)
            last, fresh = time.monotonic(), False
            work = functools.partial(self._sweep_rounds, request, plan, began)
            for kind, *value in in_background(work, "sweep"):
                if kind == "point":
                    got[value[0]].append(value[1])
                    fresh = True
                else:
                    where = tuple(value)
                if time.monotonic() - last >= SWEEP_UPDATE_S:
                    last = time.monotonic()
                    chart = self._sweep_chart(plan, got, history, start, (x, y, z)) if fresh else [gr.skip()] * 3
                    yield *chart, self._sweep_progress(plan, got, where)
                    fresh = False
            replies = sum(len(r) for r in got.values())
            per = "" if len(plan.rounds) == 1 else (f" × {_count(plan.prompts, 'prompt')} × "
                                                    f"{_count(plan.seeds, 'seed')}, drawn at their means ± se")
            how = "" if plan.settings.search == "sample" else f", each by {plan.settings.search_label}"
            status = (f"Swept {replies} replies ({len(plan.grid)} λ points{per}){how} in "
                      f"{time.monotonic() - began:.1f} s.\n\n{plan.line}")
            yield *self._sweep_chart(plan, got, history, start, (x, y, z)), status

    def _sweep_rounds(self, request: gr.Request | None, plan: SweepPlan, began: float,
                      report: Callable[..., None]) -> None:
        """The sweep's work (in a thread of its own, see `in_background`): one Engine.sweep per (prompt, seed)
        round; reports ("step", round, i, n) as it goes and ("point", key, reply) for each scored reply. Stops at
        the next step once its client is gone or Stop was pressed."""
        for r, (prompt, seed) in enumerate(plan.rounds):
            def on_step(i: int, n: int, _text: str, r: int = r) -> None:
                if self._gone(request, "sweep") or self._stopped_since(request, began):
                    raise Gone
                report("step", r, i, n)
                THREADS.apply()  # before the next step: another request may have started or ended

            with THREADS.decoding():
                self.engine.sweep(prompt, plan.methods, dataclasses.replace(plan.settings, seed=seed), plan.grid,
                                  on_step=on_step, on_point=lambda w, reply: report("point", (reply.method,
                                                                                              *w.values()), reply))

    def _sweep_chart(self, plan: SweepPlan, got: dict[tuple, list[Reply]], history: list[dict], start: int,
                     axes: tuple) -> list:
        """The chart, the history and the sample list with the sweep's points so far (each at its mean)."""
        objectives, (prompt, seed) = self.engine.objectives, plan.rounds[0]
        points = []
        for i, (key, replies) in enumerate(got.items()):
            if not replies:
                continue
            scores = {k: np.array([r.scores[k] for r in replies]) for k in objectives}
            point = {"id": start + i, "source": "sweep", "method": key[0], "prompt": prompt, "text": replies[0].text,
                     "weights": dict(zip(objectives, key[1:], strict=True)), "beta": plan.settings.beta,
                     "seed": seed, "scores": {k: float(v.mean()) for k, v in scores.items()},
                     "kl": float(np.mean([r.kl for r in replies])), "search": replies[0].search, "n": len(replies)}
            if len(replies) > 1:
                point["se"] = {k: standard_error(v) for k, v in scores.items()}
            points.append(point)
        history = (history + points)[-MAX_HISTORY:]
        return [self._figure(history, *axes), history, gr.Dropdown(choices=_sample_choices(history))]

    def _sweep_progress(self, plan: SweepPlan, got: dict[tuple, list[Reply]], where: tuple[int, int, int]) -> str:
        """The status beside the chart while a sweep runs: a bar, the round and step it is on, points so far."""
        r, i, n = where
        share = min(1.0, (r + max(i, 0) / n) / len(plan.rounds))
        bar = "▰" * round(share * 20) + "▱" * (20 - round(share * 20))
        prompt, seed = plan.rounds[r]
        step = f"{'token' if plan.settings.search == 'sample' else 'point'} {max(i, 0) + 1} of {n}"
        rounds = (f" · round {r + 1} of {len(plan.rounds)} (prompt {r // plan.seeds + 1}, seed {seed})"
                  if len(plan.rounds) > 1 else "")
        done = sum(len(v) for v in got.values())
        return (f"**Sweeping… {share:.0%}** `{bar}`{rounds} · {step} · {done} of "
                f"{len(plan.keys) * len(plan.rounds)} replies in\n\n{plan.line}")

    def _stopped_since(self, request: gr.Request | None, since: float) -> bool:
        """Whether this session pressed Stop after ``since``: gradio's cancel reaches a sweep's thread only at the
        sweep's next update, seconds later, so the thread asks here at every step."""
        return self.stops.get(getattr(request, "session_hash", None) or "", -math.inf) > since

    def stopped(self, request: gr.Request, status: str, explanation: str):
        """Stop pressed: a running sweep stops at its next step and its status says where (its points so far stay
        on the chart); a per-token view waiting for its replies goes back to its hint."""
        now = time.monotonic()
        self.stops = {k: t for k, t in self.stops.items() if t > now - 3600} | {request.session_hash: now}
        sweeping = isinstance(status, str) and status.startswith(("**Sweeping", "**Sweep queued"))
        waiting = isinstance(explanation, str) and GENERATING_NOTE in explanation
        return (status.replace("**Sweeping…", "**Stopped at", 1).replace("**Sweep queued…**", "**Stopped.**", 1)
                if sweeping else gr.skip(),
                explanation_html({}, self.engine.objectives) if waiting else gr.skip())

    def _count_trial(self, request: gr.Request | None) -> None:
        """ValueError when this session or address started too many trials lately (one script cannot stuff the
        ballot); otherwise the trial is counted."""
        keys = [(f"session {getattr(request, 'session_hash', None)}", TRIALS_PER_SESSION, "this session"),
                (f"address {_address(request)}", TRIALS_PER_ADDRESS, "your address")]
        for key, limit, who in keys:
            wait = self.trials.wait(key, limit)
            if wait:
                raise ValueError(f"{limit[0]} trials were started from {who} in the last {limit[1]:.0f} s, the most "
                                 f"allowed; rate the one shown and try again in {math.ceil(wait)} s.")
        for key, _, _ in keys:
            self.trials.add(key)

    def _study_draw(self, prompt: str, rng: random.Random) -> tuple[str, dict[str, float], dict, Settings]:
        """A study trial's prompt (the one typed, else a random example), random weights from the simplex grid, a
        random seed and the fixed STUDY_SETTINGS: (prompt, λ, settings as stored, Settings)."""
        if not (prompt or "").strip() and self.engine.examples:
            prompt = rng.choice(self.engine.examples)
        lam = dict(zip(self.engine.objectives, rng.choice(weight_grid(len(self.engine.objectives))), strict=True))
        raw = {"beta": self.engine.default_beta, **STUDY_SETTINGS,
               "max_new_tokens": min(STUDY_SETTINGS["max_new_tokens"], self.engine.max_new_tokens)}
        settings = self.engine.settings(lam, seed=rng.randint(*SEED_RANGE), **raw)
        return self._prompt(prompt, settings.max_new_tokens), lam, raw, settings

    def _study_decode(self, request: gr.Request | None, prompt: str, methods: list[str], settings: Settings,
                      progress: gr.Progress, endpoint: str) -> dict[str, str]:
        """method -> reply text, decoded side by side as one batch; one progress bar counts the tokens. Stops
        once the client is gone."""
        def decode(report: Callable[..., None]) -> None:
            # On a thread that ends with the decode, as Generate's: a gradio worker thread lives on, and the
            # OpenMP pool it would keep slows every later decode (see off_main_thread).
            with THREADS.decoding():
                for replies in THREADS.follow(self.engine.stream(prompt, methods, settings)):
                    report(replies)

        for (replies,) in in_background(decode, endpoint):
            if self._gone(request, endpoint):
                raise Gone
            progress((max(len(r.events) for r in replies), settings.max_new_tokens),
                     desc="Generating the replies…", unit="tokens")
        return {r.method: r.text for r in replies}

    def _study_header(self, prompt: str, lam: dict[str, float], task: str) -> str:
        """The prompt, the trial's weights, what the weights mean, and what to do."""
        weights = " · ".join(f"{k} {v:.2f}" for k, v in lam.items())
        return (f"**Prompt:** {prompt}\n\n**Weights:** {weights} — how much each objective counts in this trial "
                f"(they add up to 1; 0 means it does not count). {task}")

    def study_new(self, request: gr.Request, participant: str, prompt: str,
                  progress=gr.Progress()):  # noqa: B008 - as in sweep
        """A blinded trial: every method replies to one prompt under random weights, in a shuffled order."""
        with user_errors("study_new"):
            progress(0, desc="Generating the replies…")
            prompt, lam, raw, settings = self._study_draw(prompt, random.SystemRandom())
            self._count_trial(request)
            replies = self._study_decode(request, prompt, self.engine.methods, settings, progress, "study_new")
            trial = self.study.add_trial((participant or "").strip()[:100] or "anonymous", prompt, lam, settings.seed,
                                         raw, replies)
            header = self._study_header(prompt, lam, "Rate every reply on each objective by itself (1 = poor, "
                                                     "5 = excellent); pick as favourite the reply that best serves "
                                                     "this weighted mix.")
            return [trial.id, header] + trial.texts + [None] * (len(trial.texts) * len(self.engine.objectives) + 1)

    def study_submit(self, trial_id: str | None, favourite: str | None, *ratings):
        """Save one trial's ratings (slot × objective, in the order shown) and favourite, at once."""
        with user_errors("study_submit"):
            if not trial_id:
                raise ValueError("No trial to rate yet: press 'New trial' first.")
            n_obj = len(self.engine.objectives)
            slots = [chr(ord("A") + i) for i in range(len(ratings) // n_obj)]
            per_slot = {s: dict(zip(self.engine.objectives, ratings[i * n_obj:(i + 1) * n_obj], strict=True))
                        for i, s in enumerate(slots)}
            self.study.add_ratings(trial_id, per_slot, favourite or "")
            return None, "Thank you — saved. Press **New trial** for the next one."

    def _admin(self, token: str, request: gr.Request | None) -> None:
        """ValueError unless ``token`` is the admin token; an address with too many wrong tokens lately is refused
        whatever it sends (guessing is slow), and every wrong or refused try is logged."""
        if not self.admin_token:
            raise ValueError(f"Study results are disabled: set {ADMIN_TOKEN_ENV} on the server to enable them.")
        address = _address(request)
        wait = self.admin_failures.wait(address, ADMIN_FAILURES)
        if wait:
            raise ValueError(f"Too many wrong admin tokens from your address; try again in {math.ceil(wait / 60)} "
                             f"min.")
        if not token_ok(token, self.admin_token):
            count = self.admin_failures.add(address)
            LOG.warning("wrong admin token from %s (%d in the last %.0f s)", address, count, ADMIN_FAILURES[1])
            raise ValueError("Wrong admin token.")

    def _admin_call(self, endpoint: str, request: gr.Request, token: str, action: Callable[[], object]):
        """``action()`` for an admin whose token is right; every other caller gets `_admin`'s message."""
        with user_errors(endpoint):
            self._admin(token, request)
            return action()

    def _admin_export(self, endpoint: str, request: gr.Request, token: str, write: Callable[[Path], Path],
                      name: str) -> str:
        """A file ``write`` fills, for the admin who asked only: a single-use link, see `Exports`."""
        return self._admin_call(endpoint, request, token, lambda: str(write(self.exports.new(name))))

    def study_results(self, request: gr.Request, token: str):
        return self._admin_call("study_results", request, token, self.study.results)

    def study_export(self, request: gr.Request, token: str) -> str:
        """The ratings CSV."""
        return self._admin_export("study_export", request, token, self.study.export_csv, "study_ratings.csv")

    def arena_new(self, request: gr.Request, participant: str, prompt: str,
                  progress=gr.Progress()):  # noqa: B008 - as in sweep
        """A blinded pair: two methods drawn at random reply to one prompt under random weights, as A and B."""
        with user_errors("arena_new"):
            if len(self.engine.methods) < 2:
                raise ValueError(f"The arena compares two methods; this stack has only {self.engine.methods}.")
            progress(0, desc="Generating the replies…")
            rng = random.SystemRandom()
            prompt, lam, raw, settings = self._study_draw(prompt, rng)
            self._count_trial(request)
            pair = rng.sample(self.engine.methods, 2)  # add_arena_trial shuffles their slots again
            replies = self._study_decode(request, prompt, pair, settings, progress, "arena_new")
            trial = self.study.add_arena_trial((participant or "").strip()[:100] or "anonymous", prompt, lam,
                                               settings.seed, raw, replies, rng=rng)
            header = self._study_header(prompt, lam, "Vote for the reply that better serves this weighted mix.")
            return [trial.id, header, *trial.texts, None]

    def arena_vote(self, trial_id: str | None, vote: str | None):
        """Save the vote on the pair shown (A, B, tie or both bad), once: the pair is then gone from the session."""
        with user_errors("arena_vote"):
            if not trial_id:
                raise ValueError("No pair to vote on yet: press 'New pair' first.")
            if not vote:
                raise ValueError("vote: pick one of A, B, tie or both bad first.")
            self.study.add_vote(trial_id, vote)
            return None, "Thank you — vote saved. Press **New pair** for the next one."

    def arena_leaderboard(self, request: gr.Request, token: str):
        """Per method: Bradley–Terry strength, its 95 % bootstrap interval and vote counts (admin only)."""
        return self._admin_call("arena_leaderboard", request, token, self.study.arena_leaderboard)

    def arena_export_csv(self, request: gr.Request, token: str) -> str:
        """Every arena vote with its trial as CSV."""
        return self._admin_export("arena_export_csv", request, token, self.study.export_arena_csv,
                                  "arena_votes.csv")

    def arena_export_jsonl(self, request: gr.Request, token: str) -> str:
        """Preference pairs (prompt, chosen, rejected) as JSON Lines for DPO."""
        return self._admin_export("arena_export_jsonl", request, token, self.study.export_preferences,
                                  "arena_preferences.jsonl")


def _controls(engine: Engine, actions: Actions) -> dict:
    """The left column: prompt, Generate and Stop; then objective weights, methods, decoding settings."""
    c = {}
    with gr.Column(elem_id="gen-top"):  # on a phone the replies come right after this (see CSS)
        c["prompt"] = gr.Textbox(label="Prompt", lines=3, placeholder="Say something to the assistant…",
                                 elem_id="prompt", value=engine.examples[0] if engine.examples else "")
        with gr.Row():
            c["go"] = gr.Button("Generate", variant="primary", elem_id="generate", scale=3, min_width=0)
            c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, min_width=0)
        c["notice"] = gr.Markdown("", elem_id="notice")  # what is wrong with the last Generate, if anything
    with gr.Column(elem_id="gen-settings"):
        _settings_controls(engine, actions, c)
    return c


def _settings_controls(engine: Engine, actions: Actions, c: dict) -> None:
    """Under the prompt: objective weights with presets, methods, link, examples, decoding settings (into ``c``)."""
    objectives = engine.objectives
    # Equal raw weights to start; only their ratios matter, and the normalised λ is shown below them.
    c["sliders"] = [gr.Slider(0, 1, value=0.5, step=0.05, label=f"weight: {k}", elem_id=f"weight-{k}")
                    for k in objectives]
    with gr.Row():
        presets = {name: (gr.Button(name, size="sm", elem_id=f"preset-{name.split()[0]}", min_width=0), weights)
                   for name, weights in _presets(objectives).items()}
    c["lambda"] = gr.Markdown(actions.normalise(*[0.5] * len(objectives)), elem_id="lambda")
    for button, weights in presets.values():
        button.click(functools.partial(list, weights), outputs=c["sliders"], api_visibility="private",
                     queue=False, show_progress="hidden")
    c["methods"] = gr.CheckboxGroup(engine.methods, value=engine.methods, label="Methods", elem_id="methods")
    c["copy"] = gr.Button("Copy link", size="sm", elem_id="copy-link", variant="secondary")
    if engine.examples:
        with gr.Accordion("Example prompts", open=False):
            gr.Examples(examples=[[p] for p in engine.examples], inputs=[c["prompt"]], label=None)
    with gr.Accordion("Decoding settings", open=False):
        c["beta"] = gr.Slider(*BETA_RANGE, value=engine.default_beta, step=0.1,
                              label="β (MAVIS tilt strength)",
                              info="how hard MAVIS pushes towards the weighted objectives; 0 = the base model")
        c["top_k"] = gr.Slider(*TOP_K_RANGE, value=DecodeConfig.default("top_k"), step=1, label="top-k",
                               info="every method samples from its k most likely next tokens")
        c["temperature"] = gr.Slider(*TEMPERATURE_RANGE, value=DecodeConfig.default("temperature"), step=0.05,
                                     label="temperature", info="below 1: safer, more repetitive; above 1: wilder")
        c["max_new"] = gr.Slider(1, engine.max_new_tokens, value=min(DecodeConfig.default("max_new_tokens"),
                                                                     engine.max_new_tokens),
                                 step=1, label="max new tokens", info="reply length limit")
        with gr.Row(equal_height=True):
            c["seed"] = gr.Number(0, precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], label="seed",
                                  info="same seed + prompt + settings = the same replies", elem_id="seed",
                                  min_width=120)
            c["new_seed"] = gr.Checkbox(True, label="new seed each time", elem_id="new-seed", min_width=120,
                                        info="untick to replay the seed shown on a reply")
        c["search"] = gr.Radio(SEARCH_CHOICES, value=SEARCH_DEFAULTS[0], label="search (every ticked method)",
                               elem_id="search",
                               info="best-of-N keeps the best of N samples by λ-weighted reward; beam search "
                                    "keeps B beams ranked by log-prob (+ β·λ·values for MAVIS)")
        c["num_candidates"] = gr.Slider(*CANDIDATES_RANGE, value=SEARCH_DEFAULTS[1], step=1,
                                        label="N (best-of-N samples)", elem_id="num-candidates")
        c["num_beams"] = gr.Slider(*BEAMS_RANGE, value=SEARCH_DEFAULTS[2], step=1, label="B (beams)",
                                   elem_id="num-beams")


OBJECTIVE_INFO = {
    "helpful": "reward: does the reply answer the message? (a ranker's logit, about −5 … +5)",
    "harmless": "reward: log-odds that the reply is not offensive (about −7 … +7)",
    "humor": "reward: log-odds that the reply is a joke (about −7 … +5)",
}
KL_NOTE = ("**KL**: Σ log π − log π_ref over the reply, how far a method moved from the base model (nats; even the "
           "base shows some: the cost of sampling from its top-k only).")


def share_keys(objectives: list[str]) -> list[str]:
    """The share link's query keys, in the order of the controls they follow (see `_generate_tab`)."""
    return ["prompt", *[f"w_{k}" for k in objectives], "beta", "k", "temp", "len", "seed", "methods", "search", "n",
            "b"]


def share_js(keys: list[str]) -> str:
    """JS run on every change of a shared control (its values in ``keys`` order): the page's query string follows
    them (other keys, such as gradio's ``__theme``, are kept), so the address bar is always a share link."""
    return f"""(...values) => {{
  const keys = {json.dumps(keys)};
  const query = new URLSearchParams(window.location.search);
  keys.forEach((key, i) => {{
    const value = Array.isArray(values[i]) ? values[i].join(",") : values[i];
    if (value === null || value === undefined || value === "") query.delete(key);
    else query.set(key, String(value));
  }});
  if (encodeURIComponent(query.get("prompt") || "").length > {SHARE_PROMPT_BYTES}) query.delete("prompt");
  window.history.replaceState(window.history.state, "",
    window.location.pathname + "?" + query.toString() + window.location.hash);
}}"""


def _query_number(text: str, low: float, high: float, integer: bool = False) -> float | int | None:
    """``text`` as a number clipped to [low, high] (rounded if ``integer``); None for anything else."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    value = min(max(value, low), high)
    return int(round(value)) if integer else value


def settings_from_query(params: dict[str, str], engine: Engine) -> dict[str, object]:
    """The settings a share link carries (query key -> value), each checked: numbers clipped to their control's
    range, only known methods and searches, a prompt that `clean_prompt` accepts; anything else is left out, so a
    bad link opens the page with its defaults. A link with a seed also turns "new seed each time" off ("new_seed":
    False), so Generate replays it.

    >>> from types import SimpleNamespace
    >>> stub = SimpleNamespace(objectives=["helpful"], methods=["base", "mavis"], max_new_tokens=64)
    >>> settings_from_query({"w_helpful": "7", "k": "x", "methods": "mavis,nope", "seed": "3.6"}, stub)
    {'w_helpful': 1.0, 'seed': 4, 'new_seed': False, 'methods': ['mavis']}
    """
    params = {k: v for k, v in params.items() if isinstance(v, str)}
    ranges = {**{f"w_{k}": (*WEIGHT_RANGE, False) for k in engine.objectives}, "beta": (*BETA_RANGE, False),
              "k": (*TOP_K_RANGE, True), "temp": (*TEMPERATURE_RANGE, False), "len": (1, engine.max_new_tokens, True),
              "seed": (*SEED_RANGE, True), "n": (*CANDIDATES_RANGE, True), "b": (*BEAMS_RANGE, True)}
    out = {}
    for key, (low, high, integer) in ranges.items():
        value = _query_number(params[key], low, high, integer) if key in params else None
        if value is not None:
            out[key] = value
    if not any(out.get(f"w_{k}", 0.5) for k in engine.objectives):  # sliders left at 0.5 stay so
        out = {k: v for k, v in out.items() if not k.startswith("w_")}
    if "seed" in out:
        out["new_seed"] = False
    methods = [m for m in engine.methods if m in params.get("methods", "").split(",")]
    if methods:
        out["methods"] = methods
    if params.get("search") in [value for _, value in SEARCH_CHOICES]:
        out["search"] = params["search"]
    try:
        out["prompt"] = clean_prompt(params["prompt"][:MAX_PROMPT_CHARS])[0]
    except (KeyError, ValueError):
        pass
    return out


def _presets(objectives: list[str]) -> dict[str, list[float]]:
    """Slider presets: each objective alone, and all balanced."""
    out = {f"{o} only": [1.0 if k == o else 0.0 for k in objectives] for o in objectives}
    return {**out, "balanced": [0.5] * len(objectives)}


def _replies_and_chart(engine: Engine, actions: Actions) -> dict:
    """The right column: one streaming column per method; then the per-token view, the Pareto chart."""
    c = {"texts": [], "stats": []}
    with gr.Column(elem_id="gen-replies"), gr.Row(equal_height=True):
        for m in engine.methods:
            with gr.Column(min_width=180, elem_id=f"col-{m}"):
                c["texts"].append(gr.Textbox(label=METHOD_NAMES.get(m, m), lines=7, max_lines=14, interactive=False,
                                             elem_id=f"reply-{m}", elem_classes="reply", autoscroll=False))
                c["stats"].append(gr.Markdown("", elem_id=f"stats-{m}"))
    with gr.Column(elem_id="gen-chart"):
        _chart_controls(engine, actions, c)
    return c


def _chart_controls(engine: Engine, actions: Actions, c: dict) -> None:
    """Under the replies: the reward scales, the per-token view, the Pareto chart and its sweep (into ``c``)."""
    objectives = engine.objectives
    scales = " · ".join(f"**{k}** {OBJECTIVE_INFO[k]}" for k in objectives if k in OBJECTIVE_INFO)
    gr.Markdown(f"{scales}  \n{KL_NOTE}" if scales else KL_NOTE, elem_id="kl-note")
    with gr.Accordion("Per-token view", open=True, elem_id="token-view"):
        c["explain"] = gr.HTML(explanation_html({}, objectives), elem_id="explain")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            # The sweep's check, its progress and its summary: right above the chart it fills.
            c["sweep_status"] = gr.Markdown("", elem_id="sweep-status")
            c["plot"] = gr.Plot(actions._figure([], objectives[0], objectives[-1]), label="Pareto chart",
                                elem_id="pareto")
            c["details"] = gr.Markdown("", elem_id="details")
        with gr.Column(scale=1, min_width=220):
            c["x"] = gr.Dropdown(objectives, value=objectives[0], label="x axis", elem_id="x-axis")
            c["y"] = gr.Dropdown(objectives, value=objectives[-1], label="y axis", elem_id="y-axis")
            c["z"] = gr.Dropdown([NO_Z, *objectives], value=NO_Z, label="z axis (3-D view)", elem_id="z-axis",
                                 visible=len(objectives) > 2)
            c["axes_notice"] = gr.Markdown("", elem_id="axes-notice")
            c["mode"] = gr.Radio(list(SWEEP_MODES), value=SWEEP_MODES[0], label="Sweep over", elem_id="sweep-mode",
                                 info="λ from y alone to x alone, or a simplex grid; the other settings stay as set")
            c["sweep_prompts"] = gr.Slider(SWEEP_PROMPTS_RANGE[0], min(SWEEP_PROMPTS_RANGE[1],
                                                                       1 + len(engine.examples)),
                                           value=1, step=1, label="prompts per λ point", elem_id="sweep-prompts",
                                           info="the typed one, then examples")
            c["sweep_seeds"] = gr.Slider(*SWEEP_SEEDS_RANGE, value=1, step=1, label="seeds per λ point",
                                         elem_id="sweep-seeds", info="a point: their mean ± standard error")
            c["sweep"] = gr.Button("Sweep λ grid", elem_id="sweep")
            c["clear"] = gr.Button("Clear chart", variant="secondary", elem_id="clear")
            c["sample"] = gr.Dropdown([], value=None, label="Show sample (or click a point)",
                                      elem_id="sample")
            # Filled by PAGE_JS when a chart point is clicked; in the page, but never shown.
            c["point"] = gr.Textbox("", visible="hidden", elem_id="point-pick", label="clicked point")


def _listen(fn: Callable, inputs: list, endpoint: str) -> dict:
    """Listener arguments for ``fn``: gradio passes the raw values (preprocess off) and `checked` reads them."""
    return {"fn": checked(fn, inputs, endpoint), "inputs": inputs, "preprocess": False}


def _generate_tab(engine: Engine, actions: Actions, demo: gr.Blocks) -> None:
    with gr.Row(equal_height=False, elem_id="gen-row"):
        with gr.Column(scale=1, min_width=280, elem_id="gen-side"):
            c = _controls(engine, actions)
        with gr.Column(scale=3, elem_id="gen-main"):
            c |= _replies_and_chart(engine, actions)
    history = gr.State([])
    settings = [c["prompt"], c["beta"], c["top_k"], c["temperature"], c["max_new"], c["seed"], c["methods"]]
    gr.on([s.change for s in c["sliders"]], **_listen(actions.normalise, c["sliders"], "normalise"),
          outputs=c["lambda"], api_name="normalise", show_progress="hidden", queue=False)
    # The checks go through the queue (gradio 6 shows no error toast for queue=False events) without a limit.
    search = [c["search"], c["num_candidates"], c["num_beams"]]  # after the sliders: optional for API callers
    # With "new seed each time" ticked, a fresh seed goes into the seed box first, where the check and generate
    # read it (API callers pass their own seed to /generate).
    rolled = gr.on([c["go"].click, c["prompt"].submit], actions.new_seed, inputs=c["new_seed"], outputs=c["seed"],
                   api_visibility="private", show_progress="hidden", queue=False, preprocess=False)
    checks = [*settings, c["x"], c["y"], c["z"], *c["sliders"], *search]  # generate's inputs, less the history
    rolled.then(**_listen(actions.notice, checks, "notice"), outputs=c["notice"], api_visibility="private",
                queue=False, show_progress="hidden")
    generating = rolled.success(**_listen(actions.check, checks, "check"),
                                api_visibility="private", show_progress="hidden", concurrency_limit=None).success(
        **_listen(actions.generate, [*settings, c["x"], c["y"], c["z"], history, *c["sliders"], *search], "generate"),
        outputs=[*c["texts"], *c["stats"], c["explain"], c["plot"], history, c["sample"]], api_name="generate",
        **MODEL_WORK)
    # Axes: two the same are refused in the line under them (the chart stays as it was); API callers get an error.
    axes, changed = [c["x"], c["y"], c["z"]], [c["x"].change, c["y"].change, c["z"].change]
    gr.on(changed, **_listen(actions.axes_notice, axes, "axes_notice"), outputs=c["axes_notice"],
          api_visibility="private", queue=False, show_progress="hidden")
    gr.on(changed, **_listen(actions.check_axes, axes, "check_axes"), api_visibility="private",
          show_progress="hidden", concurrency_limit=None).success(
        **_listen(actions.redraw, [*axes, history], "redraw"), outputs=c["plot"], api_name="redraw")
    c["clear"].click(**_listen(actions.clear, [c["x"], c["y"], c["z"]], "clear"),
                     outputs=[c["plot"], history, c["sample"], c["details"]], api_name="clear")
    c["sample"].change(actions.show_sample, inputs=[c["sample"], history], outputs=c["details"],
                       api_name="show_sample", preprocess=False)
    c["point"].change(actions.pick_point, inputs=[c["point"], history], outputs=c["sample"], preprocess=False,
                     api_visibility="private", show_progress="hidden", queue=False)
    # The share link: the query string follows these controls (in share_keys order) and sets them on load.
    shared = [c["prompt"], *c["sliders"], c["beta"], c["top_k"], c["temperature"], c["max_new"], c["seed"],
              c["methods"], *search]
    follow = {"fn": None, "inputs": shared, "js": share_js(share_keys(engine.objectives)),
              "api_visibility": "private", "queue": False, "show_progress": "hidden"}
    gr.on([s.change for s in shared], **follow)
    # After the restore, the address bar is rewritten once: clipped values and dropped junk then show there too.
    demo.load(actions.restore, outputs=[*shared, c["new_seed"]], api_visibility="private",
              show_progress="hidden").then(**follow)
    c["copy"].click(None, js=COPY_JS, api_visibility="private", queue=False)
    # The sweep: its check writes what will run (or what is wrong) beside the chart; the sweep then streams its
    # progress there and its points into the chart, which stays in view (no progress overlay on it).
    per_point = [c["sweep_prompts"], c["sweep_seeds"]]  # last: optional for API callers (API_OPTIONAL)
    sweep_checks = [*settings, c["mode"], *axes, *search, *per_point]
    c["sweep"].click(**_listen(actions.sweep_notice, sweep_checks, "sweep_notice"), outputs=c["sweep_status"],
                     api_visibility="private", queue=False, show_progress="hidden")
    sweeping = c["sweep"].click(**_listen(actions.check_sweep, sweep_checks, "check_sweep"), api_visibility="private",
                                concurrency_limit=None, show_progress="hidden").success(
        **_listen(actions.sweep, [*settings, c["mode"], *axes, history, *search, *per_point], "sweep"),
        outputs=[c["plot"], history, c["sample"], c["sweep_status"]], api_name="sweep", show_progress="minimal",
        show_progress_on=[c["sweep_status"]], **MODEL_WORK)
    # One Stop for whatever this tab is running: the generation (with its search) and the sweep.
    c["stop"].click(actions.stopped, inputs=[c["sweep_status"], c["explain"]],
                    outputs=[c["sweep_status"], c["explain"]], cancels=[generating, sweeping], api_visibility="private",
                    queue=False, show_progress="hidden")


def _study_tab(engine: Engine, actions: Actions) -> None:
    gr.Markdown("Each trial shows the replies of several assistants to one message, in a random order, without "
                "saying which is which. Rate every reply on each objective by itself (1 = poor, 5 = excellent), "
                "then pick as favourite the reply that best serves the trial's weights (how much each objective "
                "counts).")
    with gr.Row():
        participant = gr.Textbox(label="Participant id (optional)", max_length=100, elem_id="participant")
        study_prompt = gr.Textbox(label="Prompt (leave empty for a random example)", elem_id="study-prompt")
        new_button = gr.Button("New trial", variant="primary", elem_id="study-new")
    waiting = "Press **New trial** to see the replies."
    header = gr.Markdown(waiting, elem_id="study-header")
    trial_id = gr.State(None)
    slots = [chr(ord("A") + i) for i in range(len(engine.methods))]
    texts, ratings = [], []
    with gr.Row(equal_height=False):
        for slot in slots:
            with gr.Column(min_width=200):
                texts.append(gr.Textbox(label=f"Reply {slot}", lines=6, interactive=False,
                                        elem_id=f"study-reply-{slot}"))
                ratings += [gr.Radio(list(range(RATING_RANGE[0], RATING_RANGE[1] + 1)), label=f"{slot}: {k}",
                                     elem_id=f"rate-{slot}-{k}", elem_classes="rating") for k in engine.objectives]
    favourite = gr.Radio(slots, label="Favourite reply", elem_id="favourite")
    submit = gr.Button("Submit ratings", elem_id="study-submit")
    status = gr.Markdown("", elem_id="study-status")
    with gr.Accordion("Results (admin)", open=False):
        token = gr.Textbox(label=f"Admin token ({ADMIN_TOKEN_ENV})", type="password")
        with gr.Row():
            show = gr.Button("Show per-method means")
            export = gr.Button("Export CSV")
        results = gr.Dataframe(label="Per-method results", interactive=False)
        csv_file = gr.File(label="Ratings CSV (a single-use link: export again to download again)")
    new_button.click(lambda: "", outputs=status, api_visibility="private", queue=False,
                     show_progress="hidden")
    # One progress bar per trial, on the header: gradio would otherwise draw one on every output.
    new_button.click(**_listen(actions.check_study, [participant, study_prompt], "check_study"),
                     api_visibility="private", show_progress="hidden", concurrency_limit=None).success(
        **_listen(actions.study_new, [participant, study_prompt], "study_new"),
        outputs=[trial_id, header, *texts, *ratings, favourite], api_name="study_new", show_progress_on=header,
        **MODEL_WORK)
    # A saved trial clears the form (replies, ratings, favourite), so nothing stale invites a second submit.
    submit.click(**_listen(actions.study_submit, [trial_id, favourite, *ratings], "study_submit"),
                 outputs=[trial_id, status], api_name="study_submit").success(
        functools.partial(list, [waiting, *[""] * len(texts), *[None] * (len(ratings) + 1)]),
        outputs=[header, *texts, *ratings, favourite], api_visibility="private", queue=False, show_progress="hidden")
    show.click(**_listen(actions.study_results, [token], "study_results"), outputs=results,
               api_name="study_results")
    export.click(**_listen(actions.study_export, [token], "study_export"), outputs=csv_file,
                 api_name="study_export")


def _arena_tab(engine: Engine, actions: Actions) -> None:
    from mavis_core.arena import VOTES  # the stored vote values; the radio shows them in words

    gr.Markdown("Two assistants, drawn at random, reply to the same message; you are not told which is which. "
                "Vote for the reply that better serves the trial's weights (how much each objective counts), call "
                "it a tie, or say both are bad.")
    with gr.Row():
        participant = gr.Textbox(label="Participant id (optional)", max_length=100, elem_id="arena-participant")
        prompt = gr.Textbox(label="Prompt (leave empty for a random example)", elem_id="arena-prompt")
        new_button = gr.Button("New pair", variant="primary", elem_id="arena-new")
    waiting = "Press **New pair** to see two replies."
    header = gr.Markdown(waiting, elem_id="arena-header")
    trial_id = gr.State(None)
    with gr.Row(equal_height=True):
        texts = [gr.Textbox(label=f"Reply {slot}", lines=8, interactive=False, elem_id=f"arena-{slot}", min_width=300)
                 for slot in ("A", "B")]  # min_width: one above the other on a phone
    words = {"A": "A is better", "B": "B is better", "tie": "Tie: equally good", "both bad": "Both are bad"}
    vote = gr.Radio([(words[v], v) for v in VOTES], label="Your vote", elem_id="arena-vote")
    submit = gr.Button("Submit vote", elem_id="arena-submit")
    status = gr.Markdown("", elem_id="arena-status")
    with gr.Accordion("Leaderboard (admin)", open=False, elem_id="arena-admin"):
        token = gr.Textbox(label=f"Admin token for the leaderboard ({ADMIN_TOKEN_ENV})", type="password",
                           elem_id="arena-token")
        with gr.Row():
            show = gr.Button("Show leaderboard", elem_id="arena-show")
            export_csv = gr.Button("Export votes CSV", elem_id="arena-export-csv")
            export_jsonl = gr.Button("Export preference JSONL", elem_id="arena-export-jsonl")
        gr.Markdown("**strength**: Bradley–Terry, P(i beats j) = s_i / (s_i + s_j), summing to 1 (a tie is half a "
                    "win to each; *both bad* is counted, not fitted) · **low–high**: 95 % interval over 200 "
                    "bootstrap resamples of the votes · **votes**: every vote the method was in.")
        board = gr.Dataframe(label="Leaderboard per method", interactive=False, elem_id="arena-board")
        with gr.Row():
            csv_file = gr.File(label="Votes CSV (a single-use link: export again to download again)",
                               elem_id="arena-csv", min_width=300)
            jsonl_file = gr.File(label="Preference pairs, JSONL for DPO (prompt, chosen, rejected; single-use link)",
                                 elem_id="arena-jsonl", min_width=300)
    new_button.click(lambda: "", outputs=status, api_visibility="private", queue=False,
                     show_progress="hidden")
    new_button.click(**_listen(actions.check_study, [participant, prompt], "check_study"),
                     api_visibility="private", show_progress="hidden", concurrency_limit=None).success(
        **_listen(actions.arena_new, [participant, prompt], "arena_new"),
        outputs=[trial_id, header, *texts, vote], api_name="arena_new", show_progress_on=header, **MODEL_WORK)
    submit.click(**_listen(actions.arena_vote, [trial_id, vote], "arena_vote"),
                 outputs=[trial_id, status], api_name="arena_vote").success(
        functools.partial(list, [waiting, "", "", None]), outputs=[header, *texts, vote], api_visibility="private",
        queue=False, show_progress="hidden")
    show.click(**_listen(actions.arena_leaderboard, [token], "arena_leaderboard"), outputs=board,
               api_name="arena_leaderboard")
    export_csv.click(**_listen(actions.arena_export_csv, [token], "arena_export_csv"), outputs=csv_file,
                     api_name="arena_export_csv")
    export_jsonl.click(**_listen(actions.arena_export_jsonl, [token], "arena_export_jsonl"), outputs=jsonl_file,
                       api_name="arena_export_jsonl")


def build_demo(engine: Engine, study_db: str | Path = DEFAULT_STUDY_DB, admin_token: str | None = None) -> Demo:
    """The whole app on one loaded engine; ``admin_token`` defaults to the MAVIS_ADMIN_TOKEN variable."""
    from gradio.utils import get_upload_folder

    study = StudyDB(study_db)
    abandoned = study.abandon_unrated()
    if abandoned:
        LOG.warning("%d study trial(s) left unrated by an earlier run marked abandoned", abandoned)
    exports = Exports(Path(os.path.realpath(get_upload_folder())))
    actions = Actions(engine, study, admin_token or os.environ.get(ADMIN_TOKEN_ENV), exports)
    # delete_cache: gradio also drops this run's cached files after EXPORT_TTL_S, and all of them when it stops.
    # analytics_enabled=False: gradio would report usage to its servers; the page loads nothing from outside.
    with Demo(title="MAVIS demo", delete_cache=(int(EXPORT_TTL_S), int(EXPORT_TTL_S)), analytics_enabled=False) as demo:
        about = f"{engine.description} · " if engine.description else ""
        gr.Markdown(f"## MAVIS — steer a language model between objectives at inference time\n"
                    f"{about}Stack **{engine.name}** · objectives: {', '.join(engine.objectives)} · "
                    f"methods: {', '.join(engine.methods)}. Move the sliders, press **Generate**, and watch each "
                    f"method's reply land on the Pareto chart.")
        with gr.Tab("Generate", id="generate"):
            _generate_tab(engine, actions, demo)
        with gr.Tab("User study", id="study"):
            _study_tab(engine, actions)
        with gr.Tab("Arena", id="arena"):
            _arena_tab(engine, actions)
    # api_open=False: a queued endpoint cannot be POSTed to /gradio_api/run/ directly, around every limit.
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE, api_open=False)
    demo.exports, actions.queue = exports, demo._queue
    return demo


def off_main_thread(work: Callable[[], object]) -> object:
    """``work()`` in a thread that ends with it; its result, or its exception raised here.

    torch's OpenMP keeps a pool of worker threads for every thread that ran parallel work, for as long as that
    thread lives. Once the main thread has one (from loading the stack), every decode on another thread ran about
    1.4× slower on 2 cores (4.3 against 5.7–7.0 s for a 64-token four-column reply): with more OpenMP threads
    than cores, libgomp stops letting idle workers spin between parallel regions. Work done here leaves no pool."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="mavis-load") as pool:
        return pool.submit(work).result()


def load_engine(path: str) -> Engine:
    """Load the stack once; SystemExit with one plain line (no traceback) if it cannot be used."""
    from mavis_core import load_stack  # imported here so `python app.py --help` stays instant

    if path == DEFAULT_STACK and not Path(path).exists():
        raise SystemExit(f"error: no stack at {DEFAULT_STACK} yet (the embedded stack is not built); pick one with "
                         f"--stack PATH or MAVIS_STACK=PATH, e.g. --stack stacks/hh-rlhf.toml")
    try:
        return off_main_thread(lambda: Engine(load_stack(path)))
    except Exception as err:  # noqa: BLE001 - any loading failure ends in one readable line
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SystemExit(f"error: cannot load stack {path}: {first_line}") from None


def check_study_db(path: str) -> None:
    """Check the study database now, before minutes of model loading: SystemExit with one line if it is a folder,
    not an SQLite file, or cannot be created. A missing file is created later, by build_demo."""
    target = Path(path)
    folder = next(p for p in (target.absolute(), *target.absolute().parents) if p.exists())
    try:
        if folder == target.absolute():
            StudyDB(target)
        elif not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise ValueError(f"cannot create it: {folder} is not a writable folder")
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: --study-db {path}: {err}") from None


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MAVIS demo: steer a language model between objectives.")
    # `or`: a variable set but empty (MAVIS_STACK=) means the default, not a stack file named "".
    parser.add_argument("--stack", default=os.environ.get("MAVIS_STACK") or DEFAULT_STACK,
                        help=f"stack TOML file (default: $MAVIS_STACK or {DEFAULT_STACK})")
    # On Hugging Face Spaces (SPACE_ID set) the app must listen on every interface; Spaces sets GRADIO_SERVER_NAME too.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME")
                        or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or "7860"))
    parser.add_argument("--study-db", default=os.environ.get("MAVIS_STUDY_DB") or DEFAULT_STUDY_DB,
                        help=f"SQLite file for user-study ratings (default: $MAVIS_STUDY_DB or {DEFAULT_STUDY_DB})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    check_study_db(args.study_db)
    THREADS.apply()
    engine = load_engine(args.stack)
    off_main_thread(engine.warm_up)  # on a thread of its own, like every decode (see off_main_thread)
    build_demo(engine, args.study_db).launch(server_name=args.host, server_port=args.port)  # Demo adds CSS, JS


if __name__ == "__main__":
    main()
