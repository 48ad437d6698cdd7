import sys

from trainer.report.cli import main

sys.exit(main())
