"""A run's loop, under the story in trainer/main.py: the run set up with its waits declared (run),
the training step (step), the final test and result files (final_test), the console (progress)."""
