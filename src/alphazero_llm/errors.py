"""The errors a user can fix. `train_vllm.py` prints one of these as one line naming the culprit and the fix
(`--debug` shows the traceback); anything else is a bug and keeps its traceback."""


class UserError(RuntimeError):
    """A failure the user can fix: bad input, a missing or corrupt file, a key, a teacher, a run directory.
    Its message names the culprit and says what to do."""
