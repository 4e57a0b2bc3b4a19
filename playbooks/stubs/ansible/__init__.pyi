# Type stubs for mypy only (see pyproject.toml [tool.mypy] mypy_path): ansible-core ships no types, and
# the project modules import playbooks/module_utils as ansible.module_utils.<name> (symlinks beside this).
