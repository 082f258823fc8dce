"""The ``octo`` subcommands: one module per command group, each with ``add_parsers(sub)`` that registers its
parsers and the functions they run. ``megatron_octo.cli`` assembles them and turns user errors into one line."""
