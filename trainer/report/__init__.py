"""The report: REPORT.md, its tables and figures from the run directories of a suite, beside the
reference report's numbers (trainer.report.reference). `python -m trainer.report`."""
