"""The ``recplug`` command: one module per sub-command; ``main`` is the entry point and one error boundary."""
