"""The `pcnn` command line: the entry point and one front end per sub-command.

Argument parsing and dispatch only: each front end calls the code it drives in the other subpackages
and holds no logic of its own that a notebook would need.
"""
