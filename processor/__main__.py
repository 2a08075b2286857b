"""Allows ``python -m processor``, the same as the ``user-enricher`` command."""

from processor.cli import main

raise SystemExit(main())
