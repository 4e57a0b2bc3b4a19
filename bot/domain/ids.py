"""Typed identifiers."""

from typing import NewType

RunId = NewType("RunId", int)
OperatorName = NewType("OperatorName", str)
