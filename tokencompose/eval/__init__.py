"""Evaluation: result summaries and the main demo job."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
    from tokencompose.eval.report import SchemeResult, format_table, summarise

EXPORTS = {
    "SchemeResult": "report",
    "format_table": "report",
    "summarise": "report",
}
__all__ = ["SchemeResult", "format_table", "summarise"]
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
