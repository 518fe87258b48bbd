"""Starts `python -m mambaret serve` as a child process on a free loopback port and stops it:
every test that starts one stops it, and the port is checked closed afterwards."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"on http://(\S+):(\d+) \(pid (\d+)\)")


class ServerProcess:
    def __init__(self, *args: str, env: dict | None = None, start_timeout_s: float = 120.0):
        command = [sys.executable, "-m", "mambaret", "serve", "--port", "0", "--threads", "1", *args]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(command, cwd=str(REPO_ROOT), env=full_env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.host, self.port = None, None
        threading.Thread(target=self._read, args=(self.process.stdout, self.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.stderr, False), daemon=True).start()
        if not self._ready.wait(start_timeout_s) or self.port is None:
            self.kill()
            raise RuntimeError(f"the server did not start: {''.join(self.stderr)[-2000:]}")
        self.url = f"http://{self.host}:{self.port}"

    def _read(self, stream, lines: list[str], watch: bool) -> None:
        for line in stream:
            lines.append(line)
            found = READY.search(line) if watch else None
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                self._ready.set()
        if watch:
            self._ready.set()  # the process ended before it was ready

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then the exit code; the port must be closed by then."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self.port is not None:
            assert not port_open(self.host, self.port), f"port {self.port} still open after the server exited"
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            try:
                self.stop()
            finally:
                self.kill()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def raw_request(host: str, port: int, head: bytes, body_parts=(), pause_s: float = 0.0,
                timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Sends bytes as given (headers a client library would not send, or a slow body) and returns
    (status, body) of the response."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(head)
        for part in body_parts:
            time.sleep(pause_s)
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed already
                break
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head_end = data.index(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", data[:head_end])
                if length and len(data) >= head_end + 4 + int(length.group(1)):
                    break
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data.partition(b"\r\n\r\n")[2]
