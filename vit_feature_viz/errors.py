"""One exception type for every mistake a user can fix.

The CLI prints it as a single line and exits 2; the app shows it as a message. Its text must say what went
wrong *and* what to do about it, because that line is all a user sees.

The parts a surface words its own way are data, not text: the setting at fault (`option`, named as the CLI's
flag spells it, in snake_case: "layer", "image_size"), the advice (`fix`, a template that names settings by
placeholder) and the local gallery a message is about. The CLI words `{option}` as `--layer`, the app as its
"Layer" control (see `Wording`); `str(err)` is the CLI's wording, the one line every caller already knows.
"""

from __future__ import annotations

import re

# {name} or {name:how} in a fix or a note: a setting, as the surface names it or as the phrase that sets it
PLACEHOLDER = re.compile(r"\{([a-z][a-z_]*)(?::([a-z. ]+))?\}")


class Wording:
    """How one surface names settings and local galleries inside a message: the CLI's way (flags, paths).

    `how` is the CLI's phrase that sets a setting: "use" (use --objective feature), "pass" (pass --layer N),
    "use with" (use --split with one of ...) or "use e.g." (use e.g. --top-k 8); "" is the bare name."""

    def setting(self, option: str, how: str = "") -> str:
        flag = "--" + option.replace("_", "-")
        verb, _, rest = how.partition(" ")
        if not verb:
            return flag
        if rest == "e.g.":
            return f"{verb} e.g. {flag}"
        return " ".join(part for part in (verb, flag, rest) if part)

    def gallery(self, folder: str) -> str:
        return f"the local gallery in {folder}"

    def own_fix(self, option: str | None) -> str | None:
        """This surface's own advice for a setting it does not offer (the CLI offers every one)."""
        return None


CLI_WORDING = Wording()


class VizError(Exception):
    """A user-fixable problem (bad model id, layer out of range, no token, ...): one line naming the fix.

    `message` says what was wrong; `fix` what to do, with `{option}` (or another setting's `{name}`, or
    `{name:how}`, see `Wording`) where the surface names a setting; `note` what follows the fix, such as
    "; {gallery} is unchanged"; `value` is what was given for `option`. Plain messages need none of these.
    """

    def __init__(self, message: str, *, option: str | None = None, value=None, fix: str | None = None,
                 note: str = "", gallery=None):
        self.problem, self.fix, self.note = str(message), fix, note
        self.option, self.value, self.gallery = option, value, gallery
        super().__init__(self.worded(CLI_WORDING))

    def __reduce__(self):
        """Pickled with its fields (an error may come back from a worker process), not as its CLI line."""
        return _rebuilt, (self.problem, dict(option=self.option, value=self.value, fix=self.fix, note=self.note,
                                             gallery=self.gallery))

    def worded(self, wording: Wording) -> str:
        """The one line as `wording`'s surface says it: its names for settings, or its own fix for a setting it
        does not offer (then the note follows, or a full stop)."""
        note = self._fill(self.note, wording)
        own = wording.own_fix(self.option) if self.fix is not None else None
        if self.fix is None:
            line = self.problem + note
        elif own is not None:
            line = f"{self.problem}: {own}{note or '.'}"
        else:
            line = f"{self.problem}: {self._fill(self.fix, wording)}{note}"
        return " ".join(line.split())

    def _fill(self, template: str, wording: Wording) -> str:
        """`template` with its placeholders worded (a regex, not str.format: templates may quote user input)."""
        def word(match: re.Match) -> str:
            name, how = match[1], match[2] or ""
            if name == "gallery" and self.gallery is not None:
                return wording.gallery(str(self.gallery))
            return wording.setting(self.option if name == "option" else name, how)

        return PLACEHOLDER.sub(word, template)


def _rebuilt(message: str, fields: dict) -> VizError:
    return VizError(message, **fields)
