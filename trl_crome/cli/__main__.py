"""`python -m trl_crome.cli ...` runs the `trl-crome` command."""

import sys

from . import main

sys.exit(main())
