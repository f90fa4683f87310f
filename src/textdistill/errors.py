"""Errors that users see: one line that says what is wrong and how to fix it."""


class UserError(Exception):
    """A problem with the user's input (config, files, models, data).

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    """


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
