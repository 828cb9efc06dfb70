"""A crafted pickle for the "nothing is ever unpickled" tests (a module importable by name, so that
every test directory and the subprocesses can use it)."""


class Plant:
    """Unpickling this creates the file `marker`: stands for any code a crafted file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
