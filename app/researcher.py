"""The researcher's view of a study run from a file (``?researcher=NAME``, behind the admin token): progress per
λ condition and per participant (answers, seconds per trial, failed attention checks), and the report with its
tables and every answer as a single-use zip (`mavis_core.study.report`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from mavis_core.study import read_study, study_path
from mavis_core.study.report import ReportConfig, progress, write_report

from .admin import ADMIN_TOKEN_ENV
from .api import QUIET, listen, shown_in_place, spent
from .context import Context


class Researcher:
    """Handlers of the researcher's view; every one checks the admin token first (`Admin.call`)."""

    def __init__(self, ctx: Context, studies: str | Path) -> None:
        self.ctx, self.studies = ctx, Path(studies)

    def progress(self, request: gr.Request, token: str, study: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        """A one-line summary, trials handed out and answered per λ condition, and one row per participant."""
        return self.ctx.admin.call("researcher_progress", request, token, lambda: self._progress(study))

    def _progress(self, study: str) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        spec = read_study(study_path((study or "").strip(), self.studies))
        found = progress(spec, self.ctx.study.path)
        people = found["participants"]
        finished = int(people["finished"].notna().sum()) if len(people) else 0
        failed = int((people["failed_checks"] > 0).sum()) if len(people) else 0
        simulated = " (some SIMULATED)" if len(people) and people["simulated"].any() else ""
        summary = (f"**{spec.title}** (`{spec.name}`): {len(people)} participants{simulated}, {finished} finished, "
                   f"{failed} failed an attention check; {spec.total_trials} trials each.")
        return summary, found["conditions"], people.round({"seconds_per_trial": 1})

    def report(self, request: gr.Request, token: str, study: str) -> tuple[str, str]:
        """The report page (markdown) and a single-use zip of it with its charts, tables and every answer."""
        return self.ctx.admin.call("researcher_report", request, token, lambda: self._report(study))

    def _report(self, study: str) -> tuple[str, str]:
        path = study_path((study or "").strip(), self.studies)
        target = self.ctx.admin.exports.new(f"{path.stem}-report.zip")
        with tempfile.TemporaryDirectory() as tmp:
            page = write_report(ReportConfig(path, self.ctx.study.path, out=Path(tmp) / f"{path.stem}-report"))
            text = page.read_text(encoding="utf-8")
            archive = shutil.make_archive(str(target.with_suffix("")), "zip", page.parent)
        os.chmod(archive, 0o600)  # it names participants: the server's owner only, as every export
        return text, archive


def _layout() -> dict:
    c = {}
    with gr.Column(visible=False, elem_id="researcher") as c["view"]:
        gr.Markdown("## Researcher's view\nA study run from a file (`studies/NAME.toml`): its progress, and its "
                    "report with every answer. Participants' links: `?study=NAME&PARAM=ID`, PARAM as the study "
                    "file's `participant_param`.")
        with gr.Row():
            c["token"] = gr.Textbox(label=f"Admin token ({ADMIN_TOKEN_ENV})", type="password",
                                    elem_id="researcher-token")
            c["study"] = gr.Textbox(label="Study name", max_length=64, elem_id="researcher-study")
        with gr.Row():
            c["show"] = gr.Button("Show progress", variant="primary", elem_id="researcher-show")
            c["write"] = gr.Button("Write the report", elem_id="researcher-report")
        c["notice"] = gr.Markdown("", elem_id="researcher-notice", elem_classes="notice")
        c["summary"] = gr.Markdown("", elem_id="researcher-summary")
        c["conditions"] = gr.Dataframe(label="Per λ condition: trials handed out and answered", interactive=False)
        c["participants"] = gr.Dataframe(label="Per participant (seconds per trial: from showing to answer)",
                                         interactive=False)
        c["zip"] = gr.File(label="Report, tables and every answer (a single-use link: write again to download again)",
                           height=120)
        with gr.Accordion("Report", open=False):
            c["page"] = gr.Markdown("", elem_id="researcher-page")
    return c


def researcher_view(handlers: Researcher) -> tuple[gr.Column, gr.Textbox]:
    """Lay out the researcher's view (hidden until a ``?researcher`` link opens it) and wire it; its endpoints
    are private (admin only). Returns its column and its study box, which the page load fills."""
    c = _layout()
    asked = [c["token"], c["study"]]
    for button, fn, outputs, name in ((c["show"], handlers.progress, [c["summary"], c["conditions"],
                                                                     c["participants"]], "researcher_progress"),
                                      (c["write"], handlers.report, [c["page"], c["zip"]], "researcher_report")):
        button.click(**listen(shown_in_place(fn, len(outputs)), asked, name), outputs=[*outputs, c["notice"]],
                     api_name=name, api_visibility="private")
    c["zip"].download(spent, outputs=[c["zip"], c["notice"]], **QUIET)
    return c["view"], c["study"]
