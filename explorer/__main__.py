"""``python -m explorer``: the same as the ``deep-explorer`` command."""
from explorer.cli import main

raise SystemExit(main())
