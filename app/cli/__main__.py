"""``python -m app.cli``: what child processes run (the same command as ``ivt``)."""

from app.cli.main import main

main()
