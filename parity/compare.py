"""`python -m parity.compare`: the many-seed study of parity.study.compare (see its --help)."""
import sys

from parity.study.compare import main

if __name__ == "__main__":
    sys.exit(main())
