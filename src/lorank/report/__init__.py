"""Reports: the paper's tables and figures from a study directory (``lorank report STUDY_DIR``)."""
from lorank.report.build import build_report

__all__ = ["build_report"]
