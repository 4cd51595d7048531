"""One module per ``alexnet-bench`` subcommand.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
`bench.cli.COMMANDS` lists them in the order ``--help`` shows.
"""
