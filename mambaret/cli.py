"""The `mambaret` command line. Every failure a user can cause is a one-line message and a
non-zero exit code, never a traceback: 0 success, 1 runtime failure, 2 bad arguments or input."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEMO_CORPUS = os.path.join("..", "shared", "data", "vaswani", "doc-text.trec")


class UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2."""


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="texts per call into the engine (default 64)")
    p.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens (EOS kept)")
    p.add_argument("--max-tokens", type=int, default=8192, help="tokens per micro-batch: bounds memory (default 8192)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_encoder(path: str, args):
    import mambaret as mr

    return mr.MambaEncoder.from_pretrained(path, max_length=args.max_length, max_tokens=args.max_tokens,
                                           threads=args.threads)


def _read_corpus(path: str, fmt: str):
    """(ids, texts) of a corpus file: TREC <DOC> files, BEIR corpus.jsonl, or one text per line."""
    from . import datasets
    from .corpus import text_lines

    if not os.path.isfile(path):
        raise UsageError(f"no corpus file {path!r}")
    if fmt == "auto":
        fmt = "jsonl" if path.endswith(".jsonl") else "trec" if path.endswith((".trec", ".xml", ".sgml")) else "text"
    if fmt == "trec":
        docs = datasets.load_trec_docs(path)
        return list(docs), list(docs.values())
    if fmt == "jsonl":
        corpus = datasets.load_beir_corpus(path)
        return list(corpus), [(d.get("title", "") + " " + d.get("text", "")).strip() for d in corpus.values()]
    lines = text_lines(path)
    return [str(i) for i in range(len(lines))], lines


def cmd_encode(args) -> int:
    from .corpus import encode_corpus

    if args.model is None:
        if not os.path.isfile(DEMO_CORPUS):
            raise UsageError("usage: mambaret encode MODEL_DIR CORPUS [-o embeddings.npy]\n"
                             f"(with no arguments it encodes {DEMO_CORPUS} with a small random model; "
                             "that file is not here)")
        from .random_model import write_random_model

        demo_dir = tempfile.mkdtemp(prefix="mambaret-demo-")
        tokenizer = os.path.join("..", "shared", "data", "tokenizers", "gpt-neox-20b.json")
        write_random_model(demo_dir, seed=0, tokenizer_json=tokenizer, hidden_size=256, num_hidden_layers=4)
        args.model, args.corpus = demo_dir, DEMO_CORPUS
        print(f"demo: a seeded random Mamba model (d=256, 4 layers) on {DEMO_CORPUS}")
    elif args.corpus is None:
        raise UsageError("mambaret encode needs a CORPUS file after the model directory")
    encoder = _load_encoder(args.model, args)
    ids, texts = _read_corpus(args.corpus, args.format)
    if args.limit is not None:
        ids, texts = ids[:args.limit], texts[:args.limit]
    _, report = encode_corpus(encoder, texts, len(texts), args.output, batch_size=args.batch_size,
                              show_progress_bar=False if args.quiet else None,
                              normalize_embeddings=args.normalize)
    if args.output and args.ids_output:
        with open(args.ids_output, "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + ("\n" if ids else ""))
    print(f"encoded {report.documents} documents, {report.tokens} tokens in {report.seconds:.2f} s: "
          f"{report.tokens_per_second:,.0f} tokens/s, {report.documents_per_second:,.1f} docs/s "
          f"({encoder.threads} threads, {encoder.model.blas})")
    if encoder.truncation.truncated:
        print(f"{encoder.truncation.truncated} documents were truncated to {args.max_length} tokens")
    if args.output:
        print(f"embeddings: {args.output} (float32 [{report.documents}, {encoder.embedding_dim}])")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaret", description="Dense retrieval with Mamba encoders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("encode", help="encode a corpus and report throughput",
                       description="Encode a corpus (TREC <DOC> file, BEIR corpus.jsonl, or one text per line) "
                                   "and print tokens/s. With no arguments: a small random model on the Vaswani "
                                   "collection from ../shared/data.")
    p.add_argument("model", nargs="?", help="model directory (HF format)")
    p.add_argument("corpus", nargs="?", help="corpus file")
    p.add_argument("-o", "--output", help="write embeddings to this .npy (streamed in chunks)")
    p.add_argument("--ids-output", help="with -o: write the document ids, one per line, to this file")
    p.add_argument("--format", choices=["auto", "trec", "jsonl", "text"], default="auto")
    p.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    p.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_encode)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"mambaret {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, PermissionError, ValueError, TypeError) as exc:
        print(f"mambaret {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RuntimeError, MemoryError, OSError) as exc:
        print(f"mambaret {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"mambaret {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
