"""`mambaret serve`'s command-line options (kept apart from the server so that the CLI's parser
never imports the ASGI stack)."""
from __future__ import annotations

import argparse

from .config import API_KEY_ENV, ServeConfig


def add_serve_arguments(p: argparse.ArgumentParser, default_model: str) -> None:
    d = ServeConfig()
    p.add_argument("model", nargs="?", default=default_model,
                   help="model directory (HF or sentence-transformers format); default: the packaged default model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--model-id", default=None,
                   help="the id clients send as `model` (default: the MODEL argument as given, or 'default')")
    p.add_argument("--index", help="a FlatIndex file from `mambaret index`: enables POST /search")
    p.add_argument("--hybrid", metavar="CORPUS",
                   help="with --index: fuse /search with BM25 over this corpus file (the one the index was built from)")
    p.add_argument("--fusion", choices=["rrf", "zscore"], default="rrf", help="with --hybrid: how (default rrf)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on every endpoint but /health (default: ${API_KEY_ENV})")
    p.add_argument("--accept-token-ids", action="store_true",
                   help="accept token-id input in /v1/embeddings as this model's own ids (refused by default: "
                        "OpenAI's clients send tiktoken ids)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"largest request body (default {d.max_body_bytes}); larger ones get 413")
    p.add_argument("--max-inputs", type=int, default=d.max_inputs,
                   help=f"most inputs in one request (default {d.max_inputs}); more get 413")
    p.add_argument("--max-input-tokens", type=int, default=d.max_input_tokens,
                   help=f"most tokens in one input, EOS included (default {d.max_input_tokens}); longer ones get 422")
    p.add_argument("--max-concurrent-requests", type=int, default=d.max_concurrent_requests,
                   help=f"requests handled at once (default {d.max_concurrent_requests}); more get 503")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout_s,
                   help=f"seconds a request body may take to arrive (default {d.body_timeout_s:g}); then 408")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"how long a request waits for others to share its forward (default {d.max_wait_ms:g} ms)")
    p.add_argument("--max-batch-tokens", type=int, default=d.max_batch_tokens,
                   help=f"tokens merged into one forward (default {d.max_batch_tokens})")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to finish requests in flight before giving up on them (default 30)")
    p.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens (EOS kept)")
    p.add_argument("--max-tokens", type=int, default=8192, help="tokens per engine micro-batch: bounds memory (default 8192)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="warning",
                   help="uvicorn's log level (default warning; info also logs each request)")


def config_from_args(args, default_model: str) -> ServeConfig:
    from .config import api_key_from

    model_id = args.model_id
    if model_id is None:
        model_id = "default" if args.model == default_model else args.model
    config = ServeConfig(model_id=model_id, api_key=api_key_from(args.api_key), max_body_bytes=args.max_body_bytes,
                         max_inputs=args.max_inputs, max_input_tokens=args.max_input_tokens,
                         body_timeout_s=args.body_timeout, max_concurrent_requests=args.max_concurrent_requests,
                         max_wait_ms=args.max_wait_ms, max_batch_tokens=args.max_batch_tokens,
                         accept_token_ids=args.accept_token_ids)
    config.check()
    return config
