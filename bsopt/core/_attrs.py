"""Names of the trial attributes that one stage writes and another reads.

The writers (runs) and the readers (analysis, report) import the names from here, so
neither imports the other.
"""

from __future__ import annotations

# A confirm rerun's user attribute: the number of the search trial it reran.
CONFIRM_ATTR = "confirm_of"
# A confirm rerun's user attribute: the training seed it used.
CONFIRM_SEED_ATTR = "confirm_seed"
