"""Errors a person can act on.

Every error raised for bad user input names the problem *and* the fix, so the CLI, the worker and
the Slicer module can show `str(error)` as is.
"""


class InputError(ValueError):
    """Bad user input: a file, a field of it, a parameter or an option.

    `field` names what is wrong (e.g. "/geometry/vectors"), `fix` tells what to do about it.
    """

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


def last_line(exc: BaseException) -> str:
    """The last line of an exception's message (ITK/GDCM put the reason there after a C++
    traceback), or its type when the message is empty: for the problem part of an InputError."""
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


class DeviceError(RuntimeError):
    """A requested device (GPU) is not available, or ran out of memory."""

    def __init__(self, kind: str, message: str):
        self.kind = kind  # "no-gpu" or "out-of-memory", the worker protocol's error kinds
        super().__init__(message)
