"""MAVIS demo, the Gradio app: steer a language model between objectives at inference time, live.

The package only lays out components and wires events; the work happens in mavis_core. One module per tab
(`generate`, `study`, `arena`) lays it out and wires it to thin handlers (`replies`, `sweep`, and the tabs' own);
`guard` (the ASGI guard in front of gradio), `admin` (token gate, single-use exports), `api` (type checks and
plain errors), `threads` (torch threads, the thread bridge), `controls` (settings and the share link), `page`
(static/ CSS and JS) and `server` (build and launch) hold the rest. Every action is a named API endpoint.
"""

from .server import DEFAULT_STACK, DEFAULT_STUDY_DB, build_demo, load_engine, main

__all__ = ["DEFAULT_STACK", "DEFAULT_STUDY_DB", "build_demo", "load_engine", "main"]
