"""The runs layer: what the commands and the benchmark do with scenarios and checkpoints
(the command line, :mod:`dlfd.cli`, parses options, calls these and prints)."""
