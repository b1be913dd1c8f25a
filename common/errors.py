"""Errors the user can fix. The CLI prints them as one line and exits 2 (no traceback)."""


class UserError(Exception):
    """Bad input or a missing prerequisite: printed as one line, exit code 2."""


class DataError(UserError):
    """A data file is missing, malformed or fails verification. Names the file and the problem."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
