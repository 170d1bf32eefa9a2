"""What every tab's handlers share: the engine, the study database, the admin gate, and what gradio's queue says
about a request (is its client still there, did its session press Stop)."""

from __future__ import annotations

import dataclasses
import math
import time

import gradio as gr

from mavis_core.engine import Engine, clean_prompt
from mavis_core.study import StudyDB

from .admin import Admin, Recent


@dataclasses.dataclass
class Context:
    """Shared by every user: models are loaded once; per-user data lives in gr.State, never here."""

    engine: Engine
    study: StudyDB
    admin: Admin
    queue: object | None = None  # gradio's queue, set by build_demo: its events say whose request is still wanted
    stops: dict[str, float] = dataclasses.field(default_factory=dict)  # session -> when it last pressed Stop
    trials: Recent = dataclasses.field(default_factory=Recent)  # study trials and arena pairs started, per key

    def prompt(self, prompt: str, max_new_tokens: int) -> str:
        """The prompt to decode; a gr.Warning for each adjustment (cut to fit), a ValueError for a bad one."""
        prompt, warnings = clean_prompt(prompt)
        for message in warnings + self.engine.prompt_warnings(prompt, max_new_tokens):
            gr.Warning(message)
        return prompt

    def gone(self, request: gr.Request | None, endpoint: str) -> bool:
        """Whether the client of this running request disconnected or cancelled it: gradio marks its event dead
        (or drops it); the work in between would be for nobody."""
        if request is None or self.queue is None:
            return False
        events = [e for e in list(self.queue.event_ids_to_events.values())
                  if e.session_hash == request.session_hash and e.fn.api_name == endpoint]
        return not events or all(not e.alive or e.closed for e in events)

    def press_stop(self, request: gr.Request | None) -> None:
        """Record this session's Stop (a sweep's thread reads it at its next step); forget those over an hour old."""
        now = time.monotonic()
        self.stops = {k: t for k, t in self.stops.items() if t > now - 3600}
        self.stops[getattr(request, "session_hash", None) or ""] = now

    def stopped_since(self, request: gr.Request | None, since: float) -> bool:
        """Whether this session pressed Stop after ``since``: gradio's cancel reaches a sweep's thread only at the
        sweep's next update, seconds later, so the thread asks here at every step."""
        return self.stops.get(getattr(request, "session_hash", None) or "", -math.inf) > since
