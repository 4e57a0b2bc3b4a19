"""Fixtures for the rotate-secret playbook: the fake kube API (moto, PostgreSQL and the Scenario are
shared fixtures in tests.support.rotation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.kube_api import FakeKubeAPI
from tests.support.pgcluster import make_tmp_dir, remove_tree


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    """The fake Kubernetes API server (its controller completes rollouts)."""
    with FakeKubeAPI(ready_delay=0.2) as api:
        yield api


@pytest.fixture(scope="module")
def kubeconfig(kube: FakeKubeAPI) -> Iterator[Path]:
    base = make_tmp_dir("rotate-kube-")
    path = kube.kubeconfig(base / "kubeconfig")
    yield path
    remove_tree(base)
