"""Forked replicas are not the server's children, and outlive the zygote: a pidfd still sees them end."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from hubserve.serving.zygote import ForkedProcess

# Starts a grandchild in its own session, prints its pid and exits: the grandchild is nobody's we know.
ORPHAN = ("import subprocess; print(subprocess.Popen(['sleep', '60'], start_new_session=True,"
          " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")


def test_the_end_of_a_process_that_is_not_our_child_is_noticed_quickly() -> None:
    pid = int(subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, check=True).stdout)

    async def main() -> None:
        orphan = ForkedProcess(pid)
        waiting = asyncio.ensure_future(orphan.wait())
        await asyncio.sleep(0.1)
        assert not waiting.done()
        orphan.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(waiting, 1.0) is None  # nobody told its exit code

    asyncio.run(main())


def test_the_zygotes_exit_code_is_reported_when_it_comes() -> None:
    pid = int(subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, check=True).stdout)

    async def main() -> None:
        orphan = ForkedProcess(pid)
        orphan.learn_code(-9)
        orphan.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(orphan.wait(), 1.0) == -9

    asyncio.run(main())
