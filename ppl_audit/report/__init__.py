"""Report data object and the writers that turn it into files."""

from ppl_audit.report.model import (
    SCHEMA_VERSION,
    DataFile,
    Figure,
    Highlight,
    Report,
    Section,
    Table,
    Verdict,
    VerdictRow,
)
from ppl_audit.report.writers import check_output_dir, write_report

__all__ = ["SCHEMA_VERSION", "DataFile", "Figure", "Highlight", "Report", "Section", "Table", "Verdict", "VerdictRow",
           "check_output_dir", "write_report"]
