"""Building and starting the app: load the stack once, lay out the three tabs on it, and serve them behind the
`Guard` (`python app.py --help`)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from mavis_core.engine import Engine
from mavis_core.study import StudyDB

from .admin import ADMIN_TOKEN_ENV, EXPORT_TTL_S, Admin, Exports
from .api import LOG
from .arena import Arena, arena_tab
from .context import Context
from .generate import generate_tab
from .guard import CONCURRENCY, MAX_QUEUE, MAX_REQUEST_BYTES, Guard
from .page import CSS, PAGE_JS
from .participant import Participant, participant_view
from .replies import Replies
from .researcher import Researcher, researcher_view
from .study import Study, study_tab
from .sweep import Sweep
from .threads import THREADS, off_main_thread

DEFAULT_STACK = "assets/stack.toml"
DEFAULT_STUDY_DB = "study.db"
DEFAULT_STUDIES_DIR = "studies"


class Demo(gr.Blocks):
    """gr.Blocks whose server always runs behind `Guard`, with gradio's own upload size limit set as well;
    ``exports`` holds its study exports (set by build_demo)."""

    exports: Exports

    def launch(self, *args, **kwargs):
        """gradio's launch behind the Guard; unless told ``quiet``, one line with the address once it serves (in
        place of gradio's own lines)."""
        announce, block = not kwargs.get("quiet"), not kwargs.pop("prevent_thread_lock", False)
        kwargs.setdefault("quiet", True)
        kwargs.setdefault("max_file_size", MAX_REQUEST_BYTES)
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("js", PAGE_JS)
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(Guard, demo=self)]
        out = super().launch(*args, app_kwargs=app_kwargs, prevent_thread_lock=True, **kwargs)
        if announce:
            print(f"ready: {self.local_url}", flush=True)
        if block:
            self.block_thread()
        return out


def _context(engine: Engine, study_db: str | Path, admin_token: str | None) -> Context:
    """The shared state: the study database (an earlier run's unrated trials marked abandoned) and the admin gate."""
    from gradio.utils import get_upload_folder

    study = StudyDB(study_db)
    abandoned = study.abandon_unrated()
    if abandoned:
        LOG.warning("%d study trial(s) left unrated by an earlier run marked abandoned", abandoned)
    exports = Exports(Path(os.path.realpath(get_upload_folder())))
    return Context(engine, study, Admin(admin_token or os.environ.get(ADMIN_TOKEN_ENV), exports))


def build_demo(engine: Engine, study_db: str | Path = DEFAULT_STUDY_DB, admin_token: str | None = None,
               studies_dir: str | Path = DEFAULT_STUDIES_DIR) -> Demo:
    """The whole app on one loaded engine; ``admin_token`` defaults to the MAVIS_ADMIN_TOKEN variable; a link's
    ``?study=NAME`` opens ``studies_dir/NAME.toml`` (app/participant.py)."""
    ctx = _context(engine, study_db, admin_token)
    replies = Replies(ctx)
    # delete_cache: gradio also drops this run's cached files after EXPORT_TTL_S, and all of them when it stops.
    # analytics_enabled=False: gradio would report usage to its servers; the page loads nothing from outside.
    with Demo(title="MAVIS demo", delete_cache=(int(EXPORT_TTL_S), int(EXPORT_TTL_S)), analytics_enabled=False) as demo:
        with gr.Column(elem_id="explorer") as explorer:  # hidden when a link opens a study's own view
            about = f"{engine.description} · " if engine.description else ""
            gr.Markdown(f"## MAVIS — steer a language model between objectives at inference time\n"
                        f"{about}Stack **{engine.name}** · objectives: {', '.join(engine.objectives)} · "
                        f"methods: {', '.join(engine.methods)}. Move the sliders, press **Generate**, and watch each "
                        f"method's reply land on the Pareto chart.")
            with gr.Tab("Generate", id="generate"):
                generate_tab(replies, Sweep(replies), demo)
            with gr.Tab("User study", id="study"):
                study_tab(Study(ctx))
            with gr.Tab("Arena", id="arena"):
                arena_tab(Arena(ctx))
        researcher = researcher_view(Researcher(ctx, studies_dir))
        participant_view(Participant(ctx, studies_dir), demo, explorer, researcher)
    # api_open=False: a queued endpoint cannot be POSTed to /gradio_api/run/ directly, around every limit.
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE, api_open=False)
    demo.exports, ctx.queue = ctx.admin.exports, demo._queue
    return demo


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


def _arguments(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument("--studies-dir", default=os.environ.get("MAVIS_STUDIES_DIR") or DEFAULT_STUDIES_DIR,
                        help="folder of study files that a link's ?study=NAME opens (default: $MAVIS_STUDIES_DIR or "
                             f"{DEFAULT_STUDIES_DIR})")
    return parser.parse_args(argv)


def quiet_third_parties() -> None:
    """Silence what libraries print while loading that says nothing a visitor can act on: transformers' per-file
    "Loading weights" bars and its notices, and deprecation FutureWarnings."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> None:
    """Start the app: one line per loaded part of the stack, then one with the address it serves at."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    check_study_db(args.study_db)
    quiet_third_parties()
    THREADS.apply()
    engine = load_engine(args.stack)
    for line in engine.parts():
        print(f"loaded {line}", flush=True)
    off_main_thread(engine.warm_up)  # on a thread of its own, like every decode (see off_main_thread)
    demo = build_demo(engine, args.study_db, studies_dir=args.studies_dir)
    demo.launch(server_name=args.host, server_port=args.port)  # Demo adds CSS, JS
