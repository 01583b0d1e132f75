"""Reports built only from saved JSON results: :mod:`~dlfd.report.tables`,
:mod:`~dlfd.report.paired` (seed-by-seed comparison), :mod:`~dlfd.report.build` (the pages of a
``dlfd bench`` folder); figures and pages come from :mod:`dlfd.pages`, shared with the audit.
"""

from dlfd.pages import Figure, PageTable
from dlfd.report.build import Report, build_report, load_results
from dlfd.report.tables import main_table

__all__ = ["Figure", "PageTable", "Report", "build_report", "load_results", "main_table"]
