"""Exit codes of the ``guantong`` command, documented in docs/cli.md; scripts rely on them."""

OK = 0
#: the input was read and found wrong: an invalid identifier, a config with errors
INVALID = 1
#: the command line itself was wrong (click's own code for usage errors)
USAGE = 2
#: a server or device the command needs could not be reached
UNAVAILABLE = 3
#: stopped by SIGINT
INTERRUPTED = 130
