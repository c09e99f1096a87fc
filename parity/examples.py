"""`python -m parity.examples A_DIR:FW B_DIR:FW`: per-example parity of two sweeps
(parity.study.examples)."""
import sys

from parity.study.examples import main

if __name__ == "__main__":
    sys.exit(main())
