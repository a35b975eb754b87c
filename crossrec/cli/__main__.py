"""``python -m crossrec.cli``: the ``crossrec`` command."""

from crossrec.cli import main

main()
