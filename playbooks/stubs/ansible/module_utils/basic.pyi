# The part of ansible.module_utils.basic that the project modules use.
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

class AnsibleModule:
    params: dict[str, Any]
    check_mode: bool
    no_log_values: set[Any]
    def __init__(
        self,
        argument_spec: Mapping[str, Any],
        bypass_checks: bool = ...,
        no_log: bool = ...,
        mutually_exclusive: Sequence[Sequence[str]] | None = ...,
        required_together: Sequence[Sequence[str]] | None = ...,
        required_one_of: Sequence[Sequence[str]] | None = ...,
        add_file_common_args: bool = ...,
        supports_check_mode: bool = ...,
        required_if: Sequence[Sequence[Any]] | None = ...,
        required_by: Mapping[str, Any] | None = ...,
    ) -> None: ...
    def exit_json(self, **kwargs: Any) -> NoReturn: ...
    def fail_json(self, msg: str, **kwargs: Any) -> NoReturn: ...
    def warn(self, warning: str) -> None: ...
    def log(self, msg: str, log_args: Mapping[str, Any] | None = ...) -> None: ...
    def run_command(self, args: Any, check_rc: bool = ..., **kwargs: Any) -> tuple[int, str, str]: ...
    def get_bin_path(self, arg: str, required: bool = ..., opt_dirs: Sequence[str] | None = ...) -> str | None: ...

def missing_required_lib(library: str, reason: str | None = ..., url: str | None = ...) -> str: ...
def env_fallback(*args: str, **kwargs: Any) -> str: ...

