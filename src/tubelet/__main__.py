"""`python -m tubelet ...` is the `tubelet` command (and what `torchrun -m tubelet` runs)."""

from tubelet.cli.main import main

main()
