"""``python -m bnfreeze.cli``: the same as the ``bnfreeze`` command."""

import sys

from bnfreeze.cli.main import main

sys.exit(main())
