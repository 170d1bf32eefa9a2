"""The API's edge: every listener reads its raw values through a type check (`checked`), and every mistake a
caller can fix reaches them as a `gr.Error` with a plain message (`user_errors`), never as a stack trace."""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gradio as gr

from mavis_core.engine import _number

QUIET = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}  # page-only, instant listeners
FILLED_BY_GRADIO = ("request", "progress")  # listener parameters gradio fills itself: no component behind them
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


def problem(check: Callable, *values) -> str:
    """What ``check(*values)`` refuses (its ValueError's message); "" when it accepts them."""
    try:
        check(*values)
    except ValueError as err:
        return str(err)
    return ""


def quiet_check(check: Callable, *values) -> None:
    """The browser's check before a listener: a refusal stops the event chain with no toast (a notice line, wired
    beside it, says what is wrong)."""
    message = problem(check, *values)
    if message:
        raise gr.Error(message, visible=False, print_exception=False)


def address(request: gr.Request | None) -> str:
    """The client address (uvicorn takes it from X-Forwarded-For only when the proxy is in FORWARDED_ALLOW_IPS)."""
    client = getattr(request, "client", None)
    return client.host if client else "unknown"


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


def listen(fn: Callable, inputs: list, endpoint: str) -> dict:
    """Listener arguments for ``fn``: gradio passes the raw values (preprocess off) and `checked` reads them."""
    return {"fn": checked(fn, inputs, endpoint), "inputs": inputs, "preprocess": False}


def shown_in_place(fn: Callable, n_outputs: int) -> Callable:
    """``fn`` for the page: its outputs and an empty notice, or, when it refuses, its outputs left as they were
    (a table already shown stays) and its message for a notice line beside the button (a toast would vanish)."""
    @functools.wraps(fn)
    def page(*args):
        try:
            out = fn(*args)
        except gr.Error as err:
            return [gr.skip()] * n_outputs + [f"⚠️ {err.message}"]
        return [*(out if n_outputs > 1 else [out]), ""]
    return page


def wire_in_place(trigger: gr.Button, fn: Callable, inputs: list, outputs: list, notice: gr.Markdown,
                  endpoint: str):
    """Wire ``fn`` twice: as the named endpoint ``endpoint`` for API callers (a mistake raised to them, as
    everywhere), on a button the page never shows; and on ``trigger`` for the page, where a mistake shows in
    ``notice`` (`shown_in_place`). Returns the page's event."""
    gr.Button(visible=False).click(**listen(fn, inputs, endpoint), outputs=outputs, api_name=endpoint)
    return trigger.click(**listen(shown_in_place(fn, len(outputs)), inputs, endpoint), outputs=[*outputs, notice],
                         api_visibility="private")


def cleared_once_saved(blank: list, trial_id: str | None) -> list:
    """After a page submit: the form's ``blank`` values once the trial was saved (its id is gone from the
    session), else every field as it was."""
    return list(blank) if trial_id is None else [gr.skip()] * len(blank)


def spent() -> tuple:
    """An export link once downloaded: gone (the file was served once and deleted), and a line saying so."""
    return None, "Downloaded: that link is spent (each export can be downloaded once); export again for a new one."
