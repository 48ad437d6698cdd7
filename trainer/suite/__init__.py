"""The experiments: a suite of runs (configs/suites.yaml), each trained in its own directory, on
this machine (local.py) or as one SLURM job array (slurm.py); --status (status.py) says where each
run stands. `python -m trainer.suite` (cli.py)."""
