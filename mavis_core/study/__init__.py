"""User studies: the app's live study database (`StudyDB`), study files (`read_study`), balanced assignment,
pre-built reply pools (`build_pool`), participant sessions (`StudySessions`) and the analysis report
(`write_report`). Nothing here loads torch until a pool is built.
"""

from __future__ import annotations

from .db import (
    RATING_RANGE,
    SLOTS,
    StudyDB,
    Trial,
    neutralise,
    printable,
    token_ok,
)
from .pool import DEFAULT_STUDY_DB, BuildConfig, Pool, build_pool, default_study_db, read_pool
from .sessions import Completion, ShownTrial, StudySessions, check_pid
from .spec import StudyError, StudySpec, read_study, study_path

__all__ = ["DEFAULT_STUDY_DB", "RATING_RANGE", "SLOTS", "BuildConfig", "Completion", "Pool", "ShownTrial",
           "StudyDB", "StudyError", "StudySessions", "StudySpec", "Trial", "build_pool", "check_pid",
           "default_study_db", "neutralise", "printable", "read_pool", "read_study", "study_path", "token_ok"]
