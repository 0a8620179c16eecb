"""One exception type for every mistake a user can fix.

The CLI prints it as a single line and exits 2; the app shows it as a message. Its text must say what went
wrong *and* what to do about it, because that line is all a user sees.
"""


class VizError(Exception):
    """A user-fixable problem (bad model id, layer out of range, no token, ...): one line naming the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
