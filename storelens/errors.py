"""Errors StoreLens raises for bad input: each carries one readable message."""


class StoreLensError(Exception):
    """Base class: the CLI prints ``str(err)`` and exits non-zero, no traceback."""


class ConfigError(StoreLensError):
    """The site configuration (or a CLI argument standing for it) is invalid."""


class SourceError(StoreLensError):
    """A video source cannot be opened or decoded."""


class ModelError(StoreLensError):
    """A model's weights cannot be found or loaded."""


class DecodeError(StoreLensError):
    """A message on the bus cannot be decoded; it goes to the dead-letter topic."""


class WrongMessageType(DecodeError):
    """A message's type header names another protobuf message than the one its topic carries (a misconfigured
    producer, a topic-name typo): a dead letter, never decoded (:func:`storelens.contract.messages.check_type`)."""


class StorageError(StoreLensError):
    """The database cannot be used: unreachable, closed, or written by a newer StoreLens.

    Defined here (not in :mod:`storelens.storage`) so lower layers, e.g. the
    runtime's error policy, can catch it without importing the storage layer.
    """


class WaitStopped(StorageError):
    """A SIGTERM ended a wait for the schema (``storage.migrate: wait``, ``storelens db wait``): no error, the
    process stops as asked (the services' mains exit 0, as for any SIGTERM while starting)."""


class Interrupted(KeyboardInterrupt):
    """A command stopped by Ctrl-C or SIGTERM before its end, with what its results cover (e.g. ``results cover 2
    of 302 frames``): the CLI prints ``interrupted: <message>`` and exits 130. A ``KeyboardInterrupt``, so code that
    cleans up on an interrupt does so for it too."""
