"""``python -m clconv`` runs the command-line interface."""

from clconv.cli import main

raise SystemExit(main())
