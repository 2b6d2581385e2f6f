"""Names of the trial attributes that one stage writes and another reads.

The writers (runs) and the readers (analysis, report) import the names from here, so
neither imports the other.
"""

from __future__ import annotations

# A confirm rerun's user attribute: the number of the search trial it reran.
CONFIRM_ATTR = "confirm_of"
# A confirm rerun's user attribute: the training seed it used.
CONFIRM_SEED_ATTR = "confirm_seed"
# The study attribute of a confirm study: the name of the search study its reruns repeat.
CONFIRM_STUDY_ATTR = "confirm_of_study"
# The confirm study of search study NAME is NAME + this suffix, in the same storage.
CONFIRM_STUDY_SUFFIX = ":confirm"
# A trial's user attribute: the sample counts at which its evaluation is a complete run of
# that budget (written by BudgetLevels(branch=True), read by the forecast; any study may
# set it for runs whose first samples are a shorter run).
RUNS_WITHIN_ATTR = "runs_within"


def confirm_study_name(search_study: str) -> str:
    """The name of the study that holds the confirm reruns of ``search_study``."""
    return search_study + CONFIRM_STUDY_SUFFIX
