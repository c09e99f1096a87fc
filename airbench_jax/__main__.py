"""python -m airbench_jax: run airbench recipes in JAX and append each run's record to --out.

The options, validation, run loop and output are airbench_common.cli's, shared with
`python -m airbench_torch`; the JAX-only options are its workload's (airbench_jax.workload)."""
from __future__ import annotations

import sys

from airbench_common import cli

from .workload import WORKLOAD

main = cli.entry_point(WORKLOAD)


if __name__ == "__main__":
    sys.exit(main())
