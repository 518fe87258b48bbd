"""The `mambaret` command line. Every failure a user can cause is a one-line message and a
non-zero exit code, never a traceback: 0 success, 1 runtime failure, 2 bad arguments or input."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from dataclasses import asdict

from ..models import DEFAULT_MODEL

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command that SIGPIPE ended
# What the commands use when no corpus or collection is given: Vaswani from ../shared/data,
# relative to the working directory (the repository root). Read when a command runs.
DEMO_COLLECTION = os.path.join("..", "shared", "data", "vaswani")
DEMO_CORPUS = os.path.join(DEMO_COLLECTION, "doc-text.trec")
CORPUS_SUFFIXES = (".trec", ".jsonl", ".txt", ".xml", ".sgml", ".tsv")
MODEL_HELP = "model directory (HF or sentence-transformers format); default: the packaged default model"


class UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2."""


def positive_int(text: str) -> int:
    """argparse type: a count that must be at least 1 (a negative --limit once meant 'all but')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, default=64, help="texts per call into the engine (default 64)")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="truncate texts to this many tokens (EOS kept); default: the model folder's max_seq_length")
    p.add_argument("--max-tokens", type=positive_int, default=8192,
                   help="tokens per micro-batch: bounds memory (default 8192)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--truncate-dim", type=int, default=None,
                   help="keep the embeddings' first K dimensions (Matryoshka; default: all)")
    p.add_argument("--exit-layer", type=int, default=None,
                   help="embed with the state after layer K (1-based) and run no later layer (default: the last)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="run in_proj / out_proj in int8 (W8A8) on the CPU; a `mambaret quantize` folder is int8 "
                        "without it")


def _load_encoder(path: str, args):
    import mambaret as mr

    return mr.MambaEncoder.from_pretrained(path, max_length=args.max_length, max_tokens=args.max_tokens,
                                           threads=args.threads, truncate_dim=args.truncate_dim,
                                           exit_layer=args.exit_layer, quantize=args.quantize)


def _engine(encoder) -> str:
    """What runs the matrix products, for the speed lines: the BLAS, or the int8 kernel."""
    config = getattr(encoder.model, "config", {})
    if isinstance(config, dict) and config.get("int8"):
        from .. import _C

        return f"int8: {_C.int8_kernels()['path']}"
    return encoder.model.blas


def cmd_quantize(args) -> int:
    from ..arch.int8 import save_quantized
    from ..arch.paths import find_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(find_model_dir(args.model, None, None))
    if os.path.exists(args.output) and (not os.path.isdir(args.output) or os.listdir(args.output)):
        raise UsageError(f"the output {args.output!r} exists and is not an empty folder")
    save_quantized(model_dir, args.output, rotate=not args.no_rotation)
    print(f"wrote the int8 model of {model_dir} to {args.output}")
    return EXIT_OK


def _read_corpus(path: str, fmt: str):
    """(ids, texts) of a corpus file: TREC <DOC> files, BEIR corpus.jsonl, or one text per line."""
    from ..evaluation import datasets
    from ..encoding.corpus import text_lines

    if not os.path.isfile(path):
        raise UsageError(f"no corpus file {path!r}")
    if fmt == "auto":
        fmt = "jsonl" if path.endswith(".jsonl") else "trec" if path.endswith((".trec", ".xml", ".sgml")) else "text"
    if fmt == "trec":
        docs = datasets.load_trec_docs(path)
        return list(docs), list(docs.values())
    if fmt == "jsonl":
        corpus = datasets.load_beir_corpus(path)
        return list(corpus), [datasets.document_text(d) for d in corpus.values()]
    lines = text_lines(path)
    return [str(i) for i in range(len(lines))], lines


def _require_bm25s() -> None:
    """Fails before any encoding when BM25 is asked for and bm25s is missing."""
    from ..evaluation.bm25 import require_bm25s

    try:
        require_bm25s()
    except ImportError as exc:
        raise UsageError(str(exc)) from None


def _progress(args) -> bool | None:
    """Progress bars: None (on a terminal only) unless --quiet."""
    return False if args.quiet else None


def _bars_on(args) -> bool:
    """Whether to draw the bars of work that takes a plain bool (BM25's): on a terminal, unless --quiet."""
    if args.quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _model_name(model: str) -> str:
    from ..arch.paths import resolve_model_path

    path = resolve_model_path(model)
    if os.path.isdir(path) and os.path.samefile(path, DEFAULT_MODEL):
        return "default model"
    return os.path.basename(os.path.normpath(model))


def cmd_encode(args) -> int:
    if args.corpus is None and (os.path.isfile(args.model) or
                                (not os.path.isdir(args.model) and args.model.endswith(CORPUS_SUFFIXES))):
        # one positional that is a file (or names one) is the corpus: a model is a folder or a hub id
        args.model, args.corpus = DEFAULT_MODEL, args.model
    if args.corpus is None:
        demo = DEMO_CORPUS
        if not os.path.isfile(demo):
            raise UsageError("usage: mambaret encode [MODEL_DIR] CORPUS [-o embeddings.npy]\n"
                             f"(without a corpus it encodes {demo}, which is not here)")
        args.corpus = demo
        print(f"{_model_name(args.model)} on {demo}")
    return _encode(args)


def _encode(args) -> int:
    from ..encoding.corpus import encode_corpus

    if args.ray is not None:
        return _encode_ray(args)
    encoder = _load_encoder(args.model, args)
    ids, texts = _read_corpus(args.corpus, args.format)
    if args.limit is not None:
        ids, texts = ids[:args.limit], texts[:args.limit]
    if not ids:
        raise UsageError(f"the corpus {args.corpus!r} holds no documents")
    with warnings.catch_warnings():  # truncation is reported below, in the command's words
        warnings.filterwarnings("ignore", message=r".* inputs were longer than max_length", category=UserWarning)
        _, report = encode_corpus(encoder, texts, len(texts), args.output, batch_size=args.batch_size,
                                  show_progress_bar=False if args.quiet else None,
                                  normalize_embeddings=args.normalize)
    if args.output and args.ids_output:
        with open(args.ids_output, "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + ("\n" if ids else ""))
    print(f"encoded {report.documents} documents, {report.tokens} tokens in {report.seconds:.2f} s: "
          f"{report.tokens_per_second:,.0f} tokens/s, {report.documents_per_second:,.1f} docs/s "
          f"({encoder.threads} threads, {_engine(encoder)})")
    if encoder.truncation.truncated:
        print(f"{encoder.truncation.truncated} documents were truncated to {args.max_length} tokens")
    if args.output:
        print(f"embeddings: {args.output} (float32 [{report.documents}, {encoder.embedding_dim}])")
    return EXIT_OK


def _encode_ray(args) -> int:
    """encode --ray: the corpus through an actor pool on Ray, written as Parquet shards with -o."""
    import time

    try:
        from ..encoding import distributed

        distributed._ray()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    start = time.perf_counter()
    # only Ray's warnings and errors; its C++ core's notes (a benign actor-restart line on
    # every run) only when RAY_BACKEND_LOG_LEVEL asks for them
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    distributed.connect(args.ray or None, quiet=True)
    ds = distributed.encode([args.corpus], args.model, batch_size=args.batch_size, num_actors=args.num_actors,
                            cpus_per_actor=args.threads or 1, normalize_embeddings=args.normalize,
                            address=args.ray or None, format=args.format, max_length=args.max_length,
                            max_tokens=args.max_tokens)
    if args.limit is not None:
        ds = ds.limit(args.limit)
    if args.output:
        manifest = distributed.write_shards(ds, args.output)
        rows, where = manifest["rows"], f"; shards: {args.output} ({len(manifest['shards'])} Parquet files)"
    else:
        rows, where = sum(len(b["id"]) for b in ds.iter_batches(batch_format="numpy")), ""
    seconds = time.perf_counter() - start
    print(f"encoded {rows} documents on Ray in {seconds:.2f} s: {rows / seconds:,.1f} docs/s{where}")
    return EXIT_OK


def cmd_index(args) -> int:
    from ..search.retrieval import build_index

    encoder = _load_encoder(args.model, args)
    ids, texts = _read_corpus(args.corpus, args.format)
    if not ids:
        raise UsageError(f"the corpus {args.corpus!r} holds no documents")
    index = build_index(encoder, dict(zip(ids, texts)), batch_size=args.batch_size,
                        show_progress_bar=False if args.quiet else None)
    index.save(args.output)
    print(f"indexed {index.ntotal} documents (dim {encoder.embedding_dim}) into {args.output}")
    return EXIT_OK


def _read_queries(path: str) -> dict:
    from ..evaluation import datasets

    if not os.path.isfile(path):
        raise UsageError(f"no queries file {path!r}")
    if path.endswith(".jsonl"):
        return datasets.load_beir_queries(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(4096)
    if "<top>" in head:
        return datasets.load_trec_topics(path)
    queries = {}
    for line_no, line in datasets.utf8_lines(path):  # "qid<TAB>text" per line
        if not line.strip():
            continue
        qid, sep, text = line.rstrip("\n").partition("\t")
        if not sep:
            raise UsageError(f"{path}, line {line_no}: expected 'query-id<TAB>text'")
        queries[qid] = text
    return queries


def cmd_search(args) -> int:
    from ..evaluation.datasets import write_trec_run
    from ..search.index import FlatIndex
    from ..search.retrieval import search_run

    if not os.path.exists(args.index):
        raise UsageError(f"no index file {args.index!r}")
    if args.hybrid:
        _require_bm25s()
    queries = _read_queries(args.queries)
    if not queries:
        raise UsageError(f"the queries file {args.queries!r} holds no queries")
    encoder = _load_encoder(args.model, args)
    index = FlatIndex.load(args.index, mmap=True, threads=encoder.threads)
    if index.ntotal and not index.string_ids:
        raise UsageError(f"{args.index!r} has integer ids; `mambaret index` writes document ids")
    # fusion looks deeper than k in each ranking: a document low in one can rise with the other
    depth = max(args.k, 100) if args.hybrid else args.k
    run = search_run(encoder, index, queries, k=depth, batch_size=args.batch_size, show_progress_bar=_progress(args))
    if args.hybrid:
        from ..evaluation.bm25 import bm25_run
        from ..evaluation.fusion import fuse

        ids, texts = _read_corpus(args.hybrid, "auto")
        sparse = bm25_run(dict(zip(ids, texts)), queries, k=depth, show_progress=_bars_on(args))
        run = fuse([run, sparse], method=args.fusion, top_k=args.k)
    if args.output:
        write_trec_run(run, args.output, tag="mambaret")
        print(f"wrote a run of {len(run)} queries to {args.output}")
    else:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1])[:args.k], 1):
                print(f"{qid}\t{rank}\t{docid}\t{score:.6f}")
    return EXIT_OK


def cmd_eval(args) -> int:
    from ..encoding.corpus import encode_corpus
    from ..evaluation.datasets import write_trec_run
    from ..evaluation.metrics import evaluate
    from ..search.index import FlatIndex
    from ..search.retrieval import load_collection, search_run

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not args.no_bm25:
        _require_bm25s()
    folder = args.collection
    if folder is None:
        folder = DEMO_COLLECTION
        if not os.path.isdir(folder):
            raise UsageError("usage: mambaret eval [MODEL_DIR] --collection FOLDER\n"
                             f"(without --collection it evaluates {folder}, which is not here)")
    collection = load_collection(folder)
    if not collection.docs or not collection.queries:
        raise UsageError(f"{folder!r} has no documents or no queries")
    rows, runs, report = [], [], None
    if not args.no_model:
        encoder = _load_encoder(args.model, args)
        ids = list(collection.docs)
        with warnings.catch_warnings():  # truncation is reported below, in the command's words
            warnings.filterwarnings("ignore", message=r".* inputs were longer than max_length", category=UserWarning)
            vectors, report = encode_corpus(encoder, (collection.docs[i] for i in ids), len(ids),
                                            batch_size=args.batch_size, normalize_embeddings=True,
                                            show_progress_bar=False if args.quiet else None)
        index = FlatIndex(encoder.embedding_dim, threads=encoder.threads)
        index.add(vectors, ids=ids)
        run = search_run(encoder, index, collection.queries, k=args.k, batch_size=args.batch_size,
                         show_progress_bar=_progress(args))
        rows.append((f"mambaret ({_model_name(args.model)})", evaluate(run, collection.qrels, metrics)))
        runs.append(run)
        if args.run_output:
            write_trec_run(run, args.run_output, tag="mambaret")
    if not args.no_bm25:
        from ..evaluation.bm25 import bm25_run

        runs.append(bm25_run(collection.docs, collection.queries, k=args.k, show_progress=_bars_on(args)))
        rows.append(("BM25 (bm25s)", evaluate(runs[-1], collection.qrels, metrics)))
    if len(runs) == 2 and args.fusion != "none":
        from ..evaluation.fusion import fuse

        # the table reports; it picks no winner: both methods by default
        for method in (("rrf", "zscore") if args.fusion == "both" else (args.fusion,)):
            fused = fuse(runs, method=method, top_k=args.k)
            rows.append((f"fusion ({method}: model + BM25)", evaluate(fused, collection.qrels, metrics)))
    if not rows:
        raise UsageError("nothing to evaluate: --no-model and --no-bm25 leave no system")
    names = list(rows[0][1])
    width = max(len(r[0]) for r in rows)
    print(f"{collection.name}: {len(collection.docs)} documents, {len(collection.queries)} queries, "
          f"{len(collection.qrels)} judged")
    print(f"{'system':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    for name, values in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{values[n]:>10.4f}" for n in names))
    if report is not None:
        print(f"encoding speed ({_model_name(args.model)}): {report.documents} documents, {report.tokens} tokens in "
              f"{report.seconds:.2f} s: {report.documents_per_second:,.1f} docs/s, "
              f"{report.tokens_per_second:,.0f} tokens/s ({encoder.threads} threads, {_engine(encoder)})")
        if encoder.truncation.truncated:
            print(f"{encoder.truncation.truncated} documents were truncated to {args.max_length} tokens")
    return EXIT_OK


def _folder_is_empty(path: str) -> bool:
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def _has_model(model: str) -> bool:
    from ..train import resolve_model_dir

    try:
        resolve_model_dir(model)
    except (FileNotFoundError, ValueError):
        return False
    return True


def cmd_train(args) -> int:
    """Fine-tunes MODEL on pairs; validates everything before DIR is created, so a bad input
    leaves nothing behind."""
    try:
        import torch
    except ImportError:
        raise UsageError('training needs torch: pip install torch==2.13.0 '
                         '(or pip install ".[train]" in the mambaret repository)') from None
    from ..train import Trainer, TrainingArguments, list_checkpoints, load_model, load_tokenizer, resolve_model_dir
    from ..train.data import load_training_data

    output = args.output
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output!r} is a file, not a folder")
    resume_from = None
    if args.resume is not None:
        if args.resume == "latest":
            found = list_checkpoints(output)
            if not found:
                raise UsageError(f"--resume: {output!r} holds no complete checkpoint")
            resume_from = found[-1][1]
        else:
            resume_from = args.resume
            if not os.path.isdir(resume_from):
                raise UsageError(f"--resume: no checkpoint folder {resume_from!r}")
    elif not _folder_is_empty(output):
        raise UsageError(f"--output {output!r} is not empty; choose a new folder, or pass --resume to continue "
                         f"from its latest checkpoint")
    if not os.path.exists(args.train):
        raise UsageError(f"no training file {args.train!r}")
    if resume_from is not None and not _has_model(args.model):
        # `train out/ --output out/ --resume` after an interruption: out/ holds checkpoints but
        # no final model yet; the checkpoint has the model and tokenizer to resume
        model_dir = resume_from
    else:
        model_dir = resolve_model_dir(args.model)
    examples, corpus = load_training_data(args.train, split=args.split)
    dev = None
    if args.dev is not None:
        from ..search.retrieval import load_collection

        dev = load_collection(args.dev)
        if not dev.docs or not dev.queries:
            raise UsageError(f"the dev collection {args.dev!r} has no documents or no queries")
    teacher = None
    if args.teacher is not None:
        import mambaret as mr

        teacher = mr.MambaEncoder.from_pretrained(args.teacher, max_length=args.max_length, threads=args.threads)
    training_args = TrainingArguments(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, max_length=args.max_length,
        loss=args.loss, scale=args.scale, mini_batch_size=args.mini_batch_size, temperature=args.temperature,
        base_loss=args.base_loss, matryoshka_dims=args.matryoshka_dims, matryoshka_weights=args.matryoshka_weights,
        n_dims_per_step=args.n_dims_per_step, n_layers_per_step=args.n_layers_per_step, exit_layers=args.exit_layers,
        kl_temperature=args.kl_temperature, exit_heads=args.exit_heads,
        negatives_per_query=args.negatives, mine_negatives=args.mine_negatives, mine_skip=args.mine_skip,
        seed=args.seed, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        eval_steps=args.eval_steps, max_steps=args.max_steps, device=args.device, threads=args.threads,
        show_progress_bar=False if args.quiet else None)  # None: a bar only on a terminal
    training_args.check()
    if training_args.device != "cpu":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {training_args.device}: torch sees no CUDA device")
    tokenizer, tokenizer_files = load_tokenizer(model_dir)
    model = load_model(model_dir)
    trainer = Trainer(model, tokenizer, training_args, examples, output, corpus=corpus, dev=dev, teacher=teacher,
                      tokenizer_files=tokenizer_files, log=print)
    created = not os.path.exists(output)
    os.makedirs(output, exist_ok=True)
    try:
        state = trainer.train(resume_from=resume_from)
        trainer.save_model(output)
    except BaseException:
        if created and not list_checkpoints(output):
            shutil.rmtree(output, ignore_errors=True)  # a run that failed before saving anything leaves no folder
        raise
    from ..train.saving import atomic_json

    atomic_json(os.path.join(output, "training_args.json"), {**asdict(training_args), "model": args.model,
                                                               "train": args.train})
    rate = trainer.tokens / max(trainer.seconds, 1e-9)
    last = state.history[-1] if state.history else {}
    summary = f"trained {state.global_step} steps ({len(examples)} pairs, {training_args.epochs} epochs)"
    if "loss" in last:
        summary += f", final loss {last['loss']:.4f}"
    summary += f", {rate:,.0f} tokens/s"
    if last.get("ndcg@10") is not None:
        summary += f", dev nDCG@10 {last['ndcg@10']:.4f}"
    print(summary)
    if trainer.biencoder.truncation.truncated:
        print(f"{trainer.biencoder.truncation.truncated} texts were truncated to {args.max_length} tokens")
    print(f"model: {output} (loads with MambaEncoder.from_pretrained)")
    return EXIT_OK


def cmd_serve(args) -> int:
    try:
        from .serve.server import serve_from_args
    except ImportError as exc:
        raise UsageError(f'the server needs uvicorn, starlette and orjson ({exc}): pip install "mambaret[serve]"') from None
    return serve_from_args(args, DEFAULT_MODEL)


class _CommandParser(argparse.ArgumentParser):
    """A command's parser that takes options between its positional arguments. The model is an
    optional first positional, so plain argparse would give `index MODEL --quiet CORPUS`'s
    first chunk, MODEL, to CORPUS; intermixed parsing sees every positional at once."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # the inner passes of parse_known_intermixed_args
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaret", description="Dense retrieval with Mamba encoders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    p = sub.add_parser("encode", help="encode a corpus and report throughput",
                       description="Encode a corpus (TREC <DOC> file, BEIR corpus.jsonl, or one text per line) "
                                   "and print tokens/s. The model defaults to the packaged default model "
                                   "(mambaret.DEFAULT_MODEL), the corpus to the Vaswani documents from "
                                   "../shared/data: with no arguments it encodes Vaswani with the default model.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("corpus", nargs="?",
                   help=f"corpus file: TREC <DOC>, BEIR corpus.jsonl, or one text per line (default {DEMO_CORPUS})")
    p.add_argument("-o", "--output", help="write embeddings to this .npy (streamed in chunks)")
    p.add_argument("--ids-output", help="with -o: write the document ids, one per line, to this file")
    p.add_argument("--format", choices=["auto", "trec", "jsonl", "text"], default="auto")
    p.add_argument("--limit", type=positive_int, default=None, help="encode only the first N documents")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                   help="L2-normalise the embeddings, as `index` does (default since 0.2.0; --no-normalize keeps "
                        "the raw vectors of a model without a Normalize module)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="encode on Ray (the cluster at ADDRESS, else RAY_ADDRESS, else a local one; put it after "
                        "the corpus or write --ray=ADDRESS); -o is then a folder of Parquet shards, --threads "
                        "the CPUs of each actor")
    p.add_argument("--num-actors", type=int, default=None, help="with --ray: encoder replicas (default: all CPUs)")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("index", help="encode a corpus into a saved FlatIndex",
                       description="Encode a corpus (normalised embeddings) and save a FlatIndex keyed by "
                                   "document id. The model defaults to the packaged default model.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("corpus", help="corpus file: TREC <DOC>, BEIR corpus.jsonl, or one text per line")
    p.add_argument("-o", "--output", required=True, help="index file to write")
    p.add_argument("--format", choices=["auto", "trec", "jsonl", "text"], default="auto")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search a saved index with queries",
                       description="Encode queries and search an index written by `mambaret index`; print "
                                   "'qid rank docid score' lines or write a TREC run. The model defaults to the "
                                   "packaged default model.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help="model directory, the one the index was built with; default: the packaged default model")
    p.add_argument("index", help="index file from `mambaret index`")
    p.add_argument("queries", help="TREC topics, BEIR queries.jsonl, or 'qid<TAB>text' lines")
    p.add_argument("-k", type=positive_int, default=10, help="results per query (default 10)")
    p.add_argument("-o", "--output", help="write a TREC run file instead of printing")
    p.add_argument("--hybrid", metavar="CORPUS",
                   help="fuse with BM25 over this corpus file (the one the index was built from)")
    p.add_argument("--fusion", choices=["rrf", "zscore"], default="rrf", help="with --hybrid: how (default rrf)")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate the model, BM25 and their fusion on a test collection",
                       description="Index a collection's documents, run its queries and print nDCG@10, "
                                   "MRR@10, Recall@100 and MAP for the model, BM25 and their fusions (RRF and "
                                   "z-score) in one table, and the model's encoding speed. With no arguments: the "
                                   "packaged default model on the Vaswani collection from ../shared/data.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--collection", default=None,
                   help="TREC folder (doc-text.trec, query-text.trec, qrels) or BEIR folder "
                        f"(default {DEMO_COLLECTION})")
    p.add_argument("--no-model", action="store_true", help="leave out the model: BM25 alone")
    p.add_argument("--metrics", default="ndcg@10,mrr@10,recall@100,map")
    p.add_argument("-k", type=positive_int, default=1000, help="depth of each ranking (default 1000)")
    p.add_argument("--no-bm25", action="store_true", help="leave out the BM25 baseline")
    p.add_argument("--fusion", choices=["both", "rrf", "zscore", "none"], default="both",
                   help="also score the fusion of the model's and BM25's runs: rrf, zscore or both (default both)")
    p.add_argument("--run-output", help="also write the model's TREC run here")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="write an int8 (W8A8) copy of a model",
                       description="Quantize MODEL's in_proj and out_proj to int8 per output channel, with a "
                                   "Hadamard rotation of out_proj's input folded into its weight, and write an "
                                   "int8 folder that from_pretrained (and every command) reads as it is. "
                                   "Activations are quantized per token when the model runs, on the CPU.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("output", help="new or empty folder for the int8 model")
    p.add_argument("--no-rotation", action="store_true", help="leave out the Hadamard rotation (plain W8A8)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("train", help="fine-tune a model as a bi-encoder on (query, positive) pairs",
                       description="Fine-tune MODEL on JSONL lines {\"query\", \"positive\", \"negatives\"} or a BEIR "
                                   "folder (qrels/<split>.tsv) with InfoNCE (or distillation) and write the trained "
                                   "model, with its tokenizer, at the root of --output.")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help="model to start from: HF or sentence-transformers folder; default: the packaged default model")
    p.add_argument("--train", required=True, help="training pairs: a JSONL file or a BEIR folder")
    p.add_argument("--output", "-o", required=True, help="output folder (new or empty; checkpoints go in subfolders)")
    p.add_argument("--dev", help="dev collection (TREC or BEIR folder): nDCG@10 at the end and every --eval-steps")
    p.add_argument("--split", default="train", help="qrels split of a BEIR --train folder (default train)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32, help="queries per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (default 1e-5)")
    p.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warm-up share of the steps (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--max-length", type=int, default=512, help="tokens per text, EOS included (default 512)")
    p.add_argument("--loss", choices=["mnrl", "cached-mnrl", "mse", "kl", "matryoshka", "adaptive-layer", "2d-matryoshka"],
                   default="mnrl",
                   help="mnrl: InfoNCE over in-batch and hard negatives (default); cached-mnrl: the same in "
                        "mini-batches; mse / kl: distillation from --teacher (kl also from 'scores' in the data); "
                        "matryoshka / adaptive-layer / 2d-matryoshka: --base-loss at several widths / exits / both")
    p.add_argument("--base-loss", choices=["mnrl", "cached-mnrl", "mse"], default="mnrl",
                   help="the loss the matryoshka / layer losses wrap (default mnrl; cached-mnrl with matryoshka only)")
    p.add_argument("--matryoshka-dims", type=int, nargs="+", default=None,
                   help="widths to train (default: the model's config.json matryoshka_dims, else d, d/2, d/4, d/8)")
    p.add_argument("--matryoshka-weights", type=float, nargs="+", default=None, help="one per dim (default 1 each)")
    p.add_argument("--n-dims-per-step", type=int, default=None,
                   help="dims drawn per step (default: all for matryoshka, 1 for 2d-matryoshka)")
    p.add_argument("--n-layers-per-step", type=int, default=1, help="prior exits drawn per step (default 1; -1: all)")
    p.add_argument("--exit-layers", type=int, nargs="+", default=None,
                   help="the prior exits to train (default: every layer before the last)")
    p.add_argument("--exit-heads", action="store_true",
                   help="layer losses: give each trained exit its own gain vector (default: the final norm's)")
    p.add_argument("--kl-temperature", type=float, default=0.3,
                   help="layer losses: temperature of the KL term to the last layer (default 0.3; 0: none)")
    p.add_argument("--scale", type=float, default=20.0, help="InfoNCE: cosine x scale (default 20)")
    p.add_argument("--mini-batch-size", type=int, default=32, help="cached-mnrl: texts per pass (default 32)")
    p.add_argument("--temperature", type=float, default=1.0, help="kl: softmax temperature (default 1)")
    p.add_argument("--teacher", help="teacher model directory for mse / kl distillation (\"default\": the packaged one)")
    p.add_argument("--negatives", type=int, default=None, help="use at most this many negatives per line")
    p.add_argument("--mine-negatives", type=int, default=0,
                   help="before each epoch, mine this many hard negatives per query with the current model")
    p.add_argument("--mine-skip", type=int, default=0, help="skip the top N mined candidates (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-steps", type=int, default=0, help="write a checkpoint every N steps (default: none)")
    p.add_argument("--save-total-limit", type=int, default=None, help="keep only the newest N checkpoints")
    p.add_argument("--eval-steps", type=int, default=0, help="with --dev: evaluate every N steps")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from a checkpoint folder (default: the latest in --output)")
    p.add_argument("--device", default="cpu", help="cpu (float32) or cuda[:N] (bf16 autocast, float32 weights)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    from .serve.options import add_serve_arguments  # no ASGI import: only the flags

    p = sub.add_parser("serve", help="serve embeddings (OpenAI /v1/embeddings, TEI /embed) and search over HTTP",
                       description="An embedding and search server with dynamic batching: POST /v1/embeddings "
                                   "(OpenAI), POST /embed (text-embeddings-inference), POST /search (with --index), "
                                   "GET /health, /v1/models, /metrics. Binds 127.0.0.1 unless --host says otherwise; "
                                   "SIGTERM finishes the requests in flight and exits 0. "
                                   'Needs pip install "mambaret[serve]".')
    add_serve_arguments(p, DEFAULT_MODEL)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
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


def _reader_went_away() -> int:
    """`mambaret eval | head`: the reader stopped reading. Like other command-line tools, stop
    quietly with SIGPIPE's exit status (128 + 13); stdout goes to /dev/null so that the flush at
    exit does not report the closed pipe either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured, replaced)
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
