"""The one exception tree of runbook-bot. Callers catch at any level.

    RunbookBotError                 every error a user or operator can cause; str() is one line saying
    │                               what was wrong and how to fix it
    ├── CatalogError                a runbook file is invalid (names the file and the key)
    ├── ConfigError                 the operators file or the environment is invalid
    ├── UnknownRunbook              no runbook by that name
    ├── ParameterError              unknown, missing, wrongly typed, out of range, pattern mismatch
    ├── PolicyError                 the actor may not do this
    │   ├── NotAllowedToRequest
    │   ├── NotAnApprover
    │   ├── SelfApproval
    │   ├── AlreadyDecided          this approver already approved/denied
    │   ├── QuorumUnreachable       fewer eligible approvers exist than the runbook requires
    │   ├── UnknownOperator         the identity maps to no operator
    │   └── NotApproved             a run about to execute lacks the approvals its policy needs
    ├── RunStateError               the run is not in a state that allows this
    │   ├── RunNotFound
    │   ├── RequestExpired
    │   └── RunFinished
    ├── LockHeld                    the lock key is held by another active run (names it)
    ├── PlanError                   the plan could not be computed, or changed since approval
    ├── ExecutionError              ansible-runner could not be started
    └── StorageError                the database is unreachable or refused the change
        └── AuditTampered           audit verification found a bad event
"""

from __future__ import annotations


class RunbookBotError(Exception):
    """Base of every error a user or operator can cause."""


class CatalogError(RunbookBotError):
    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {message}")


class ConfigError(RunbookBotError):
    pass


class UnknownRunbook(RunbookBotError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        hint = f" Known runbooks: {', '.join(known)}." if known else " The catalog is empty."
        super().__init__(f"unknown runbook {name!r}.{hint}")


class ParameterError(RunbookBotError):
    pass


class PolicyError(RunbookBotError):
    pass


class NotAllowedToRequest(PolicyError):
    pass


class NotAnApprover(PolicyError):
    pass


class SelfApproval(PolicyError):
    pass


class AlreadyDecided(PolicyError):
    pass


class QuorumUnreachable(PolicyError):
    pass


class UnknownOperator(PolicyError):
    pass


class NotApproved(PolicyError):
    pass


class RunStateError(RunbookBotError):
    pass


class RunNotFound(RunStateError):
    pass


class RequestExpired(RunStateError):
    pass


class RunFinished(RunStateError):
    pass


class LockHeld(RunbookBotError):
    def __init__(self, lock_key: str, holder: int) -> None:
        self.lock_key, self.holder = lock_key, holder
        super().__init__(
            f"target locked: {lock_key} is held by run {holder}; wait for it to finish "
            f"(runbook-bot status {holder}) or cancel it (runbook-bot cancel {holder})"
        )


class PlanError(RunbookBotError):
    pass


class ExecutionError(RunbookBotError):
    pass


class StorageError(RunbookBotError):
    pass


class AuditTampered(StorageError):
    pass
