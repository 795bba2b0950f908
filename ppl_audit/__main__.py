"""``python -m ppl_audit`` runs the command line."""

import sys

from ppl_audit.cli import main

sys.exit(main())
