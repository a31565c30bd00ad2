"""`python -m local`: see `local.cli`."""

import sys

from local.cli import main

sys.exit(main())
