"""Report data object and the writers that turn it into files."""

from ppl_audit.report.model import SCHEMA_VERSION, Figure, Report, Section, Table
from ppl_audit.report.writers import check_output_dir, write_report

__all__ = ["SCHEMA_VERSION", "Figure", "Report", "Section", "Table", "check_output_dir", "write_report"]
