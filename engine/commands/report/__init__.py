"""What a run's database says, read back: the text report (summary.py) with its best-of-N section (best_of.py), its
figures (figures.py) as HTML or PNG files (html.py), and two runs' scores side by side (compare.py).

`batch_report` and `print_report` are the package's entry points (the batch prints the report when it ends)."""

from .summary import batch_report, print_report

__all__ = ["batch_report", "print_report"]
