"""`python -m trainer.predict`: class scores of image files from a trained run. The tool lives in trainer/tools/predict.py; this name is the
documented command and stays."""

import sys

from trainer.tools.predict import main

if __name__ == "__main__":
    sys.exit(main())
