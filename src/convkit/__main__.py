"""``python -m convkit`` runs the ``convkit`` command."""

import sys

from convkit.cli.main import main

sys.exit(main())
