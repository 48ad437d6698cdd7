"""`python -m trainer.config ARGS`: check a training command line, print the resolved settings."""

import sys

from trainer.config.parse import main

sys.exit(main())
