"""The ``medtrans`` command line: the parser, its option checks and one-line errors (:mod:`medtrans.commands.cli`),
and one module per sub-command (``demo``, ``train``, ``translate``, ``evaluate``) that turns parsed options into calls
of the library. Only this package reads command-line arguments."""
