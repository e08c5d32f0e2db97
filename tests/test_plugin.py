"""The pytest plugin as a user's project sees it: fixtures, options, the marker."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_fixtures_work_in_a_new_project_and_can_be_configured(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def sendai_sandbox_options():
            return {"tasks": 7, "seed": 3}
        """
    )
    pytester.makepyfile(
        """
        import asyncio
        import pytest

        def test_defaults_from_the_options_fixture(sendai_sandbox, sendai_client):
            assert len(sendai_sandbox.task_ids) == 7
            task = asyncio.run(sendai_client.tasks.get("task_000006",
                                                       project_id=sendai_sandbox.project_id))
            assert task.id == "task_000006"

        @pytest.mark.sendai_sandbox(tasks=3, fault_rate=1.0, faults=["503"])
        def test_the_marker_overrides(sendai_sandbox):
            assert len(sendai_sandbox.task_ids) == 3
            assert sendai_sandbox.fault_rate == 1.0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=2)
