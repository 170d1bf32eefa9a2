"""The server guard: ASGI middleware in front of gradio's routes that refuses oversized, malformed and excess
requests with a message and one log line, before gradio reads or queues anything (docs/app.md, "API")."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from mavis_core.engine import MAX_PROMPT_CHARS

from .api import LOG

CONCURRENCY = 2  # requests running the model at once, of every kind together; more only slows everyone on 2 vCPUs
MODEL_GROUP = "model"  # the one concurrency group of generate, sweep and study trials, so CONCURRENCY is the total
MODEL_WORK = {"concurrency_id": MODEL_GROUP, "concurrency_limit": CONCURRENCY}  # for the listeners that run the model
MAX_QUEUE = 64  # waiting requests beyond this are turned away at once rather than left to time out
MAX_JOBS_PER_SESSION = 2  # model requests queued or running per browser tab / API client; more are refused at once
MAX_JOBS_PER_ADDRESS = 16  # ... per client address (a quarter of the queue: one machine cannot fill it)
MAX_REQUEST_BYTES = 2**20  # per HTTP request body: a prompt is cut to its last 4,000 characters anyway
API_OPTIONAL = {"sweep": 2}  # trailing values an API call may leave out (options added later): their defaults


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

    def __init__(self, app: Callable, demo) -> None:
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
