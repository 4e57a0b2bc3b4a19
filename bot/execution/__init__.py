"""Execution: ansible-runner wrapper, redaction, the worker pool."""
