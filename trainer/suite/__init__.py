"""The experiments: a suite of runs (configs/suites.yaml), each trained in its own directory.
`python -m trainer.suite` (cli.py)."""
