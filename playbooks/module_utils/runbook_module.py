"""What every project module shares: the one operator-facing failure, step dispatch, result reporting.

Imported by the modules in playbooks/library as `ansible.module_utils.runbook_module` (Ansible ships
playbooks/module_utils with each module that imports from it).

- OperatorError: a refusal or failure whose message is fit for the operator (no secret values, no
  traceback). Raised anywhere below a module's entry point; `run` turns it into `fail_json(msg=...)`
  with the error's extra `fields`.
- Steps: a multi-step module (a drill, a rotation) is a class whose steps are methods named
  `step_<name>`; `dispatch(obj, name)` calls one and refuses an unknown name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol


class OperatorError(Exception):
    """A failure with a message for the operator; `fields` are reported next to `msg` in the result."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields: dict[str, Any] = fields


class Reporter(Protocol):
    """The part of AnsibleModule that reports a result (what `run` needs; tests pass a fake)."""

    def exit_json(self, **kwargs: Any) -> NoReturn: ...

    def fail_json(self, msg: str, **kwargs: Any) -> NoReturn: ...


def dispatch(obj: object, step: str) -> Any:
    """Call `obj.step_<step>()`; an unknown step is an OperatorError naming the known ones."""
    method = getattr(obj, f"step_{step}", None)
    if not callable(method):
        known = sorted(name[len("step_"):] for name in dir(obj) if name.startswith("step_"))
        raise OperatorError(f"unknown step {step!r} (steps: {', '.join(known)})")
    return method()


def run(module: Reporter, body: Callable[[], Mapping[str, Any]],
        translate: Callable[[Exception], OperatorError | None] = lambda _: None) -> NoReturn:
    """Report `body()`'s result with exit_json, or its OperatorError with fail_json.

    `translate` turns a library's own exceptions (an API error) into an OperatorError; anything it
    returns None for propagates (Ansible shows it as a module traceback: a bug, not an operator error).
    """
    try:
        result = dict(body())
    except OperatorError as err:
        module.fail_json(msg=str(err), **err.fields)
    except Exception as err:
        translated = translate(err)
        if translated is None:
            raise
        module.fail_json(msg=str(translated), **translated.fields)
    module.exit_json(**result)
