"""``python -m gradstop train ...``: see ``gradstop.cli``."""

import sys

from gradstop.cli import main

sys.exit(main())
