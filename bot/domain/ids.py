"""Typed identifiers, and reading a run id from what a person typed."""

import re
from typing import NewType

RunId = NewType("RunId", int)
OperatorName = NewType("OperatorName", str)

# ASCII digits only: str.isdigit() also accepts a superscript two, which int() refuses, and Arabic-Indic
# digits, which int() reads as another number; and a run id is never longer than a bigint.
_RUN_ID = re.compile(r"#?([0-9]{1,18})")


def parse_run_id(text: str) -> RunId | None:
    """The run id in `text` (`12` or `#12`), or None when it is not one."""
    m = _RUN_ID.fullmatch(text.strip())
    return RunId(int(m.group(1))) if m else None
