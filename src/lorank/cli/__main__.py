"""``python -m lorank.cli ...``: the same as ``lorank ...``."""
import sys

from lorank.cli import main

sys.exit(main())
