"""`python -m relay.cli`: the `relay` command (how `relay dev` and the tests start processes)."""

from relay.cli import main

raise SystemExit(main())
