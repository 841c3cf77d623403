"""`python -m chiron_operator.gateway`: the same as `chiron-gateway`."""

import sys

from chiron_operator.gateway.cli import main

sys.exit(main())
