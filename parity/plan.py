"""`python -m parity.plan --simulate`: the sequential plan's operating characteristics
(parity.study.plan)."""
import sys

from parity.study.plan import main

if __name__ == "__main__":
    sys.exit(main())
