"""Which downstream tasks a data file supports (``classify``, ``find``, ``regress``).

It lives in :mod:`lensearch.data.tasks` (a property of the data file, also needed by the search's downstream
objective); this module re-exports it.
"""

from lensearch.data.tasks import (NON_LENS, REGRESSION_TARGETS, SPIN2_PAIRS, TASKS, LensData, Split, Task,
                                  load_data, plan_tasks)

__all__ = ["NON_LENS", "REGRESSION_TARGETS", "SPIN2_PAIRS", "TASKS", "LensData", "Split", "Task", "load_data",
           "plan_tasks"]
