"""``python -m sknn_kernels`` runs the command-line interface."""

from .cli import main

raise SystemExit(main())
