"""Evaluation: result summaries and the main demo job."""

from tokencompose.eval.report import SchemeResult, format_table, summarise

__all__ = ["SchemeResult", "format_table", "summarise"]
