"""Free text from people (a request's reason, an approver's comment, parameter values): checked on the way
in, shown inert on the way out.

On the way in, `check_free_text` refuses what could make the text look like something else when shown:
control characters (newline, tab, ESC and so every terminal escape sequence, NUL, C1 controls), Unicode line
and paragraph separators, and bidirectional-text controls. Parameters get the same check (bot.domain.params).

On the way out, `visible` is the defence in depth for rows already stored (or written by anything but the
spine): each such character becomes a visible escape (`\\n`, `\\x1b`, `\\u202e`), so the text stays on one
line and cannot move the cursor, colour the terminal or reorder what is displayed. The Slack front end
adds its own mrkdwn neutralising on top (bot.slack.blocks.inert).
"""

from __future__ import annotations

import unicodedata

from bot.errors import ParameterError

MAX_FREE_TEXT = 2000
# Bidirectional-text controls: LRM/RLM/ALM, embeddings and overrides, isolates.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def forbidden(ch: str) -> bool:
    """Is `ch` a character that changes how surrounding text is displayed (never shown as itself)?"""
    return ch in BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def describe(ch: str) -> str:
    """`U+000A (newline)`-style name of a forbidden character, for error messages."""
    kind = "bidirectional-text control" if ch in BIDI_CONTROLS else {
        "\n": "newline", "\r": "carriage return", "\t": "tab", "\x1b": "escape (terminal escape sequence)",
        "\x00": "NUL", "\u2028": "line separator", "\u2029": "paragraph separator",
    }.get(ch, "control character")
    return f"U+{ord(ch):04X} ({kind})"


def check_free_text(field: str, value: str, *, max_length: int = MAX_FREE_TEXT) -> str:
    """`value` unchanged when it is one line of displayable text; else ParameterError naming the field.

    The one check for every free-text field a person types (reason, comment), whichever front end it
    comes from: the CLI calls it before anything else, the service calls it again before storing.
    """
    if len(value) > max_length:
        raise ParameterError(f"{field}: longer than {max_length} characters")
    for ch in value:
        if forbidden(ch):
            raise ParameterError(
                f"{field}: {describe(ch)} is not allowed: write the {field} on one line, without control "
                "characters, escape sequences or bidirectional-text controls"
            )
    return value


def visible(value: object) -> str:
    """`value` as one line of inert text: every forbidden character replaced by a visible escape."""
    text = str(value)
    if not any(forbidden(ch) for ch in text):
        return text
    out = []
    for ch in text:
        if not forbidden(ch):
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def quoted(value: object) -> str:
    """`visible(value)` between double quotes: free text, shown as such, never as one of our fields."""
    return f'"{visible(value)}"'
