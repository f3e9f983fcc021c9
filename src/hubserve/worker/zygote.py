"""The zygote: a process that imports torch and transformers once, then forks CPU replicas on request,
so a new replica skips those seconds of imports. Speaks the framed channel format over stdin/stdout."""

from __future__ import annotations

import faulthandler
import json
import os
import select
import struct
import sys

_LENGTHS = struct.Struct("!II")
PRELOADED = (
    "torch",
    "transformers",
    "transformers.pipelines",
    "sentence_transformers",
    "transformers.models.bert.modeling_bert",
    "transformers.models.llama.modeling_llama",
    "hubserve.worker.process",
)


def _read_exactly(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _receive(fd: int) -> dict[str, object]:
    header_len, body_len = _LENGTHS.unpack(_read_exactly(fd, _LENGTHS.size))
    header: dict[str, object] = json.loads(_read_exactly(fd, header_len))
    _read_exactly(fd, body_len)
    return header


def _send(fd: int, header: dict[str, object]) -> None:
    raw = json.dumps(header).encode()
    os.write(fd, _LENGTHS.pack(len(raw), 0) + raw)


def _become_worker(request: dict[str, object], control: tuple[int, int]) -> None:
    """In the forked child: detach, point output at the endpoint's log, take the env, run the replica."""
    os.setsid()
    for fd in control:
        os.close(fd)
    log = os.open(str(request["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # A crash (segfault, abort) leaves its traceback in the log, where the failure message finds it.
    faulthandler.enable()
    env = request["env"]
    assert isinstance(env, dict)
    # Exactly the env the server chose, as a spawned replica would get: nothing of ours leaks through.
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    from hubserve.worker.process import main

    try:
        main()
    except SystemExit as exit_:
        os._exit(exit_.code if isinstance(exit_.code, int) else 1)
    os._exit(0)


def _reap(out_fd: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(out_fd, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(in_fd: int, out_fd: int) -> None:
    for module in PRELOADED:
        __import__(module)
    _send(out_fd, {"op": "ready", "pid": os.getpid()})
    while True:
        readable, _, _ = select.select([in_fd], [], [], 0.2)
        _reap(out_fd)
        if not readable:
            continue
        try:
            request = _receive(in_fd)
        except EOFError:  # the server went away
            return
        pid = os.fork()
        if pid == 0:
            _become_worker(request, (in_fd, out_fd))
        _send(out_fd, {"op": "forked", "ticket": request["ticket"], "pid": pid})


def main() -> None:
    # Whatever the server's event loop let us inherit beyond stdio (copies of our pipes' ends among it)
    # would pass on to every replica, and keep our pipes open after our death.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    # Our channel is stdin/stdout; anything else the imports print goes to stderr.
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(in_fd, out_fd)


if __name__ == "__main__":
    main()
