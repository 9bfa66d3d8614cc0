"""Shared fixtures."""

import contextlib

import pytest

from rubric_rft.testing.judge_server import JudgeServer


@pytest.fixture
def judge_server():
    """A scripted judge server with default options (no latency, default policy)."""
    with JudgeServer() as server:
        yield server


@pytest.fixture
def start_judge_server():
    """Start scripted judge servers with any `JudgeServer` options; all stop when the test ends."""
    with contextlib.ExitStack() as servers:
        yield lambda **options: servers.enter_context(JudgeServer(**options))
