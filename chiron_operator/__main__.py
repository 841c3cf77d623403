"""`python -m chiron_operator` runs the operator."""

from chiron_operator.operator.main import main

raise SystemExit(main())
