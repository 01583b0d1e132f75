"""Reports built only from saved JSON results: tables, figures, HTML and Markdown pages.

- :mod:`dlfd.report.tables`: mean ± std over seeds, best per column, published MUFAC numbers,
  the stronger attacks, settings and every run;
- :mod:`dlfd.report.plots`: loss distributions, NoMUS vs wall time, the DLFD forgetting-score
  trace, 2-D feature projections;
- :mod:`dlfd.report.pages`: self-contained HTML and Markdown (shared with the audit);
- :mod:`dlfd.report.build`: :func:`build_report` for a ``dlfd bench`` folder.
"""

from dlfd.report.build import Report, build_report, load_results
from dlfd.report.pages import Figure, PageTable
from dlfd.report.tables import main_table

__all__ = ["Figure", "PageTable", "Report", "build_report", "load_results", "main_table"]
