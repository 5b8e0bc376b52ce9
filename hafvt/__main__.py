"""``python -m hafvt`` is the ``hafvt`` command (and ``torchrun ... -m hafvt train`` a run over several processes)."""
import sys

from hafvt.cli import main

sys.exit(main())
