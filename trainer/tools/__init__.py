"""Tools for a finished run: score a submission (score), predict image files (predict), evaluate a
run's weights on a split (evaluate_run); run_model opens a run's network for the last two."""
