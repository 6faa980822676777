"""`python -m diffres`: the command line (diffres.cli)."""

import sys

from diffres.cli import main

sys.exit(main())
