"""`python -m hubserve` is the `hubserve` command."""

from hubserve.cli import main

main()
