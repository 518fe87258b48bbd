"""Running the app under uvicorn: binding, the ready line, and SIGTERM as a graceful drain that
exits 0 (uvicorn would re-raise the signal after its shutdown, so the process would die of it)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys

import uvicorn

log = logging.getLogger("mambaret.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server: on SIGTERM it stops accepting, finishes what is in flight, and returns
    normally instead of re-raising the signal. SIGINT keeps uvicorn's behaviour."""

    def __init__(self, config: uvicorn.Config, ready_line: str):
        super().__init__(config)
        self._ready_line = ready_line

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)  # uvicorn's list of signals to re-raise
        if sig == signal.SIGTERM and captured is not None:
            captured[:] = [s for s in captured if s != signal.SIGTERM]

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self._ready_line, flush=True)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that port 0 can pick a free port and the ready line
    can name it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(app, host: str, port: int, graceful_timeout_s: float = 30.0, log_level: str = "warning") -> int:
    """Serves app until SIGTERM or SIGINT; returns 0 once every accepted request is answered."""
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    state = app.state.mambaret
    ready = (f"mambaret serve: model {state.config.model_id!r} ({state.embedding.dim}-d) on "
             f"http://{shown}:{bound_port} (pid {os.getpid()})")
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=graceful_timeout_s, lifespan="on",
                            server_header=False, date_header=True)
    server = DrainingServer(config, ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print(f"mambaret serve: stopped; {state.accepted} requests accepted, {state.answered} answered", flush=True)
    if not server.started:
        return 1
    return 0 if state.accepted == state.answered else 1


def serve_from_args(args, default_model: str) -> int:
    """`mambaret serve`: loads the model (and the index and BM25 corpus), then serves."""
    from ... import MambaEncoder
    from .app import create_app
    from .options import config_from_args

    config = config_from_args(args, default_model)
    if args.hybrid and not args.index:
        raise ValueError("--hybrid needs --index: BM25 is fused with the dense search of an index")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {args.port}")
    encoder = MambaEncoder.from_pretrained(args.model, device=args.device, max_length=args.max_length,
                                           max_tokens=args.max_tokens, threads=args.threads)
    index = bm25 = None
    if args.index:
        from ...search.index import FlatIndex

        if not os.path.isfile(args.index):
            raise FileNotFoundError(f"no index file {args.index!r}")
        index = FlatIndex.load(args.index, mmap=True, threads=encoder.threads)
    if args.hybrid:
        from ...evaluation.bm25 import BM25
        from ..cli import _read_corpus

        ids, texts = _read_corpus(args.hybrid, "auto")
        bm25 = BM25(dict(zip(ids, texts)))
    app = create_app(encoder, config, index=index, bm25=bm25, fusion=args.fusion)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    return run(app, args.host, args.port, args.graceful_timeout, args.log_level)
