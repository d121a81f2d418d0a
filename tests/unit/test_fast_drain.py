"""app.fast_drain: a delivery runs inline until it would block, then as a task, like before."""

from __future__ import annotations

import asyncio

import faust
import pytest

from app.fast_drain import FAUST_VERSION, FastDrainConsumer, run_until_blocked
from app.faust_app import app
from app.rebalance import CommitBeforeRevokeConsumer


def test_the_drain_loop_copy_matches_the_installed_faust() -> None:
    # The override is a copy of this release's loop: upgrading faust-streaming means re-reading it.
    assert faust.__version__ == FAUST_VERSION
    assert "_drain_messages" in vars(FastDrainConsumer)
    assert issubclass(app.transport.Consumer, CommitBeforeRevokeConsumer)


def test_a_delivery_that_does_not_block_finishes_inline_without_a_task() -> None:
    log: list[str] = []

    async def deliver() -> None:
        log.append("delivered")

    async def main() -> None:
        tasks_before = len(asyncio.all_tasks())
        assert run_until_blocked(deliver()) is None
        assert log == ["delivered"] and len(asyncio.all_tasks()) == tasks_before

    asyncio.run(main())


def test_an_error_in_an_inline_delivery_propagates() -> None:
    async def deliver() -> None:
        raise ValueError("bad message")

    async def main() -> None:
        with pytest.raises(ValueError, match="bad message"):
            run_until_blocked(deliver())

    asyncio.run(main())


def test_a_blocked_delivery_resumes_as_a_task_with_its_result() -> None:
    async def main() -> None:
        room = asyncio.Event()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("before")
            await room.wait()  # a full stream buffer
            steps.append("after")
            await asyncio.sleep(0)
            return "done"

        rest = run_until_blocked(deliver())
        assert rest is not None and steps == ["before"] and not rest.done()
        room.set()
        assert await rest == "done" and steps == ["before", "after"]

    asyncio.run(main())


def test_cancelling_a_blocked_delivery_cancels_the_coroutine_inside() -> None:
    async def main() -> None:
        seen: list[str] = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        rest = run_until_blocked(deliver())
        assert rest is not None
        await asyncio.sleep(0)
        rest.cancel()  # what wait_first does when a rebalance suspends the flow
        with pytest.raises(asyncio.CancelledError):
            await rest
        assert seen == ["cancelled"]

    asyncio.run(main())
