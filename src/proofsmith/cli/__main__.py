"""``python -m proofsmith.cli``."""

from . import main

main()
