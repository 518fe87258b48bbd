"""Last-token embeddings from llama.cpp (through llama-cpp-python's C bindings), for token-id input.

Runs inside the llama-cpp-python virtual environment (numpy + llama_cpp only), as a subprocess
of bench/cpu_bench.py or bench/peers/parity_llama.py:

    python bench/peers/llama_embed.py embed MODEL.gguf TOKENS.json OUT.npy --threads 2
    python bench/peers/llama_embed.py time MODEL.gguf --length 512 --seqs 16 --threads 2 --json OUT.json

Embeddings are llama.cpp's pooled "last" embedding (the final-norm hidden state of each sequence's
last token, not normalised). llama.cpp's embedding mode marks every token as an output, splits
a batch into one sequence per micro-batch for recurrent models and also runs the LM head on every
token; that is its real cost and is measured as is. Sequences longer than n_batch are fed in
consecutive decode calls, the recurrent state carrying over.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def bench_tokens(n_seqs: int, length: int, vocab: int, seed: int) -> np.ndarray:
    """The benchmark's token ids, identical for every engine given the same arguments."""
    rng = np.random.default_rng(seed)
    return rng.integers(2, vocab, size=(n_seqs, length), dtype=np.int64).astype(np.int32)


class LlamaLastTokenEmbedder:
    def __init__(self, gguf_path: str, threads: int, n_batch: int = 2048, n_seq_max: int = 64,
                 n_ctx: int = 0, verbose: bool = False):
        import llama_cpp as lc

        self.lc = lc
        if not verbose:
            self._log_cb = lc.llama_log_callback(lambda level, text, user: None)
            lc.llama_log_set(self._log_cb, ctypes.c_void_p(0))
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_mmap = False  # count the weights in RSS like the other engines
        self.model = lc.llama_model_load_from_file(gguf_path.encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf_path}")
        cparams = lc.llama_context_default_params()
        cparams.embeddings = True
        cparams.pooling_type = lc.LLAMA_POOLING_TYPE_LAST
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_ctx = n_ctx or n_batch
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.n_batch, self.n_seq_max = n_batch, n_seq_max
        self.n_embd = lc.llama_model_n_embd(self.model)
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self.memory = lc.llama_get_memory(self.ctx)

    def close(self):
        lc = self.lc
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)

    def _decode(self, pieces: list[tuple[int, int, np.ndarray]]):
        """pieces: (seq slot, first position, token ids), all fitting in one batch."""
        b = self.batch
        n = 0
        for slot, pos0, ids in pieces:
            for j, tok in enumerate(ids.tolist()):
                b.token[n] = tok
                b.pos[n] = pos0 + j
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = slot
                b.logits[n] = 1
                n += 1
        b.n_tokens = n
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _read(self, slot: int) -> np.ndarray:
        ptr = self.lc.llama_get_embeddings_seq(self.ctx, slot)
        if not ptr:
            raise RuntimeError(f"no pooled embedding for sequence {slot}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).copy()

    def embed(self, sequences: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(sequences), self.n_embd), dtype=np.float32)
        i = 0
        while i < len(sequences):
            if len(sequences[i]) > self.n_batch:  # one long sequence over several decode calls
                self.lc.llama_memory_clear(self.memory, True)
                ids = np.asarray(sequences[i])
                for start in range(0, len(ids), self.n_batch):
                    self._decode([(0, start, ids[start:start + self.n_batch])])
                out[i] = self._read(0)
                i += 1
                continue
            group, used = [], 0
            while (i + len(group) < len(sequences) and len(group) < self.n_seq_max
                   and used + len(sequences[i + len(group)]) <= self.n_batch):
                used += len(sequences[i + len(group)])
                group.append(np.asarray(sequences[i + len(group)]))
            self.lc.llama_memory_clear(self.memory, True)
            self._decode([(slot, 0, ids) for slot, ids in enumerate(group)])
            for slot in range(len(group)):
                out[i + slot] = self._read(slot)
            i += len(group)
        return out


def library_version() -> dict:
    import llama_cpp as lc

    info = {"llama_cpp_python": getattr(lc, "__version__", "?")}
    try:
        info["system_info"] = lc.llama_print_system_info().decode(errors="replace").strip()
    except Exception as exc:  # older bindings
        info["system_info"] = f"unavailable: {exc}"
    return info


def cmd_embed(args) -> int:
    with open(args.tokens) as f:
        sequences = [np.asarray(s, dtype=np.int32) for s in json.load(f)]
    longest = max(len(s) for s in sequences)
    emb = LlamaLastTokenEmbedder(args.model, args.threads, n_batch=max(args.n_batch, 1),
                                 n_seq_max=max(len(sequences), 1), n_ctx=max(args.n_batch, longest),
                                 verbose=args.verbose)
    vectors = emb.embed(sequences)
    emb.close()
    np.save(args.out, vectors)
    print(json.dumps({"n": len(sequences), "longest": longest, **library_version()}))
    return 0


def cmd_time(args) -> int:
    rss0 = current_rss_mib()
    n_batch = min(args.n_batch, args.length * args.seqs)
    n_seq_max = max(1, min(args.seqs, n_batch // args.length)) if args.length <= n_batch else 1
    t0 = time.perf_counter()
    emb = LlamaLastTokenEmbedder(args.model, args.threads, n_batch=n_batch, n_seq_max=n_seq_max,
                                 n_ctx=max(n_batch, args.length))
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mib()
    tokens = bench_tokens(args.seqs, args.length, args.vocab, args.seed)
    seqs = list(tokens)
    emb.embed([seqs[0][:min(args.length, 512)]])  # warm-up: thread pool, first graph allocation
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        emb.embed(seqs)
        times.append(time.perf_counter() - t)
    emb.close()
    best = min(times)
    result = {
        "engine": "llama.cpp", "length": args.length, "seqs": args.seqs, "threads": args.threads,
        "tokens_per_call": args.length * args.seqs, "n_batch": n_batch, "n_seq_max": n_seq_max,
        "times_s": times, "tokens_per_s": args.length * args.seqs / best, "load_s": load_s,
        "rss_start_mib": rss0, "rss_loaded_mib": rss_loaded, "peak_rss_mib": peak_rss_mib(),
        **library_version(),
    }
    text = json.dumps(result)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="llama.cpp last-token embeddings for token ids")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="embed the token-id lists of a JSON file into a .npy")
    e.add_argument("model")
    e.add_argument("tokens")
    e.add_argument("out")
    e.add_argument("--threads", type=int, default=os.cpu_count())
    e.add_argument("--n-batch", type=int, default=2048)
    e.add_argument("--verbose", action="store_true")
    e.set_defaults(fn=cmd_embed)
    t = sub.add_parser("time", help="time last-token embedding of random token ids")
    t.add_argument("model")
    t.add_argument("--length", type=int, required=True)
    t.add_argument("--seqs", type=int, default=1)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--reps", type=int, default=2)
    t.add_argument("--vocab", type=int, default=50280)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-batch", type=int, default=2048)
    t.add_argument("--json")
    t.set_defaults(fn=cmd_time)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
