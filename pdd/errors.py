"""User-facing errors. Core modules raise these; only the CLI turns them into one printed line."""


class PddError(Exception):
    """An error whose message tells the user what is wrong and, where possible, what to do."""


class DataError(PddError):
    """The dataset is missing, corrupt or does not fit the request."""


class TeacherError(PddError):
    """The teacher checkpoint is missing, corrupt or belongs to another architecture or dataset."""


class DivergedError(PddError):
    """A loss became NaN or infinite; the trial is recorded as failed with this message as reason."""


class ResultsError(PddError):
    """A results directory cannot be read: foreign or newer schema, or unreadable files."""


class SweepError(PddError):
    """A sweep file is malformed (the message names its line) or a sweep directory cannot be run or resumed."""
