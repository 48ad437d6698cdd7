"""Scoring: exactly-once evaluation of a split across ranks (evaluate), the metrics (metrics), and
the end of a run: the test split and the result files (final_test)."""
