"""The server's side of the zygote (worker/zygote.py): keeps one running, restarted with backoff when it
dies; forks replicas through it; and watches each forked replica with a pidfd, since they are not our
children and outlive the zygote."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
from pathlib import Path

from hubserve.channel import Channel, ChannelClosed
from hubserve.serving.backoff import RestartBackoff

log = logging.getLogger("hubserve.serving")

ZYGOTE_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# How long a fork waits for a starting zygote's imports before the replica is spawned fresh instead.
READY_TIMEOUT_S = 60.0
# The zygote reaps its children every 0.2 s; a death is reported without its code after this.
EXIT_CODE_WAIT_S = 0.5
# How long the messages a dead zygote left in its pipe may take to be read.
DRAIN_S = 1.0


class ForkedProcess:
    """A replica forked by the zygote. Its pidfd says when it ends, whoever its parent is by then (the
    zygote, or init once the zygote died); the zygote tells its exit code while it lives to see it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        loop = asyncio.get_running_loop()
        self._code: asyncio.Future[int | None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already reaped
            self._ended.set_result(None)
            return
        loop.add_reader(self._pidfd, self._on_end)

    def _on_end(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if not self._ended.done():
            self._ended.set_result(None)

    def learn_code(self, code: int | None) -> None:
        if not self._code.done():
            self._code.set_result(code)

    async def wait(self) -> int | None:
        """Until the process ends; its exit code, or None where nobody could learn it."""
        await asyncio.shield(self._ended)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self._code), EXIT_CODE_WAIT_S)
        return None

    def send_signal(self, sig: int) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)  # through the pidfd: never a recycled pid


class Zygote:
    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self._log_path = log_path
        self._env = env
        self._channel: Channel | None = None
        self._ready: asyncio.Future[bool] | None = None  # this incarnation's: False once it died
        self._tickets = itertools.count()
        self._forks: dict[int, asyncio.Future[ForkedProcess | None]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Set before the supervisor first runs, so replicas restored right after wait for this zygote.
        self._ready = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.ensure_future(self._supervise())

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = RestartBackoff(ZYGOTE_BACKOFF_S)
        while True:
            started = loop.time()
            try:
                ended = f"exited with code {await self._run()}"
            except OSError as exc:
                ended = f"could not start ({exc})"
                self._forget_all()
            delay = backoff.next_delay(loop.time() - started)
            log.warning("the zygote %s; it restarts in %g s, replicas are spawned fresh meanwhile", ended, delay)
            await asyncio.sleep(delay)
            self._ready = loop.create_future()

    async def _run(self) -> int:
        """One incarnation, from its start to its exit."""
        assert self._ready is not None
        with open(self._log_path, "ab") as log_file:
            process = self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hubserve.worker.zygote", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log_file, env=self._env, start_new_session=True,
            )
        assert process.stdout is not None and process.stdin is not None
        channel = self._channel = Channel(process.stdout, process.stdin)
        reading = asyncio.ensure_future(self._read(channel, self._ready))
        try:
            # Its exit, not its pipe's end, is its death: a process holding a copy of the pipe keeps it open.
            code = await process.wait()
            with contextlib.suppress(TimeoutError):  # what it said before it died: its children's exit codes
                await asyncio.wait_for(reading, DRAIN_S)
        finally:
            reading.cancel()
            channel.close()
            self._channel = None
            self._forget_all()
        return code

    async def _read(self, channel: Channel, ready: asyncio.Future[bool]) -> None:
        while True:
            try:
                header, _ = await channel.receive()
            except ChannelClosed:
                return
            if header["op"] == "ready" and not ready.done():
                ready.set_result(True)
            elif header["op"] == "forked":
                child = self._children[int(header["pid"])] = ForkedProcess(int(header["pid"]))
                waiting = self._forks.pop(int(header["ticket"]), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(child)
                else:  # whoever asked gave up (its endpoint was deleted): nobody would ever stop this one
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(signal.SIGKILL)
            elif header["op"] == "exited":
                known = self._children.pop(int(header["pid"]), None)
                if known is not None:
                    known.learn_code(int(header["code"]))

    def _forget_all(self) -> None:
        """The zygote is gone: forks it owed will not come, and its children's exit codes are lost."""
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(False)
        for waiting in self._forks.values():
            if not waiting.done():
                waiting.set_result(None)
        self._forks.clear()
        for child in self._children.values():
            child.learn_code(None)
        self._children.clear()

    async def fork(self, env: dict[str, str], log_path: Path) -> ForkedProcess | None:
        """A replica process forked with exactly `env`, or None while the zygote is not up."""
        ready = self._ready
        if ready is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ready), READY_TIMEOUT_S)
        channel = self._channel
        if not (ready.done() and ready.result()) or channel is None:
            return None
        ticket = next(self._tickets)
        forked = self._forks[ticket] = asyncio.get_running_loop().create_future()
        try:
            await channel.send({"op": "fork", "ticket": ticket, "env": env, "log": str(log_path)})
            return await forked
        except ChannelClosed:
            return None
        finally:
            self._forks.pop(ticket, None)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
        self._forget_all()
