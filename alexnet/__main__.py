"""``python -m alexnet`` is the same as the ``alexnet-bench`` console script."""

import sys

from alexnet.cli import main

sys.exit(main())
