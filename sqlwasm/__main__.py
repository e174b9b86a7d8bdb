"""`python -m sqlwasm`: the sqlwasm command."""

import sys

from ._cli import main

sys.exit(main())
