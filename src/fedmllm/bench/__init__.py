"""``fedmllm bench``: a grid of experiments over seeds, run as separate processes, and its report.

- :mod:`.grid`: the grid file (settings x axes x seeds, fixed keys, claims), checked whole.
- :mod:`.runner`: every cell a ``fedmllm run`` in its own folder; parallel jobs, resume, Ctrl-C.
- :mod:`.results`: ``results.csv``, a row per cell and modality view, read from the run folders.
- :mod:`.stats`: means with 95 % intervals over seeds, paired tests (t, sign, permutation),
  Holm's correction.
- :mod:`.report`: ``report.md`` / ``report.html`` with the tables and figures.
"""

from .grid import Cell, Grid, load_grid
from .report import build_report
from .runner import BenchInterrupted, run_bench

__all__ = ["BenchInterrupted", "Cell", "Grid", "build_report", "load_grid", "run_bench"]
