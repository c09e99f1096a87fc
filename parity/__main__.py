"""`python -m parity` is `python -m parity.compare`."""
import sys

from .compare import main

sys.exit(main())
