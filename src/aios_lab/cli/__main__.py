"""`python -m aios_lab.cli` (how the demo and the sweep cells start the CLI in the guest)."""
from aios_lab.cli import main

main()
