import sys

from trainer.suite.cli import main

sys.exit(main())
