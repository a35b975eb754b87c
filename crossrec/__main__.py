"""``python -m crossrec``: the ``crossrec`` command."""

from crossrec.cli import main

main()
