"""The top layer: the ``ivt`` command, its sub-commands, the demo and the process launchers.

It may import every other package; nothing imports it (``.importlinter``).
"""
