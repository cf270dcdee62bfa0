"""convkit.report: a training run's whole story on one self-contained HTML page.

The report sits above ``convkit.train``, ``convkit.inspect`` and ``convkit.explain``: it reads a run folder
(checkpoint, metrics, config), re-runs the checkpoint on its test set, and draws the layer table, filters
and Grad-CAMs with those packages.

>>> from convkit.report import build_report
>>> build_report(tiny_run, gradcams=1).name                 # a run folder -> RUN/report.html
'report.html'
"""

from convkit.report.page import ReportError, build_report

__all__ = ["ReportError", "build_report"]
