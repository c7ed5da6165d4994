"""Exceptions raised for bad user input. Entry points turn them into one-line messages."""


class MimoAudioError(ValueError):
    """A user-facing error: bad input, bad option, bad checkpoint. The message is one line."""


class AudioInputError(MimoAudioError):
    """Audio that cannot be used: empty, corrupt, non-finite, too long, unreadable."""


class CheckpointError(MimoAudioError):
    """A checkpoint folder that is missing, truncated, or does not match its config."""
