"""The ``kfn`` command line: one console script, one subcommand per component."""
