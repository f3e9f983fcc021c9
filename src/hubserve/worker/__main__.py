"""`python -m hubserve.worker`: the entry point of a replica process."""

from hubserve.worker.process import main

main()
