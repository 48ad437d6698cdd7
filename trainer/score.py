"""`python -m trainer.score`: score a submission CSV. The tool lives in trainer/tools/score.py; this name is the
documented command and stays."""

import sys

from trainer.tools.score import main

if __name__ == "__main__":
    sys.exit(main())
