"""`python -m trainer.evaluate_run`: evaluate a trained run's weights on a split. The tool lives in trainer/tools/evaluate_run.py; this name is the
documented command and stays."""

import sys

from trainer.tools.evaluate_run import main

if __name__ == "__main__":
    sys.exit(main())
