"""The training-data builder's readers and negative mining, on small inputs made here (no apt, no
teacher), and the committed sample's shape."""
from __future__ import annotations

import gzip
import json
import os
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "recipes" / "default_model"))

import build_data  # noqa: E402
from readers import debian, dictd, docstrings, manpages, rst_sections  # noqa: E402
from readers.text import dedup_key, truncate_words  # noqa: E402

SAMPLE = REPO_ROOT / "tests" / "data" / "default_model_sample.jsonl"


def test_debian_stanzas_and_long_description():
    text = ("Package: foo\nDescription-md5: 1\nDescription-en: fast foo tool\n first line of the\n"
            " long text.\n .\n Second paragraph.\n\nPackage: bar\nDescription-en: x\n")
    stanzas = list(debian._stanzas(text))
    assert stanzas[0]["Package"] == ["foo"] and stanzas[0]["Description-en"][0] == "fast foo tool"
    assert debian._long_description(stanzas[0]["Description-en"][1:]) == \
        "first line of the long text.\nSecond paragraph."


def _dictd_base64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


def test_dictd_reader(tmp_path):
    entries = [("00-database-info", "about\n"), ("cat", "cat\n   n 1: a small {feline} [syn: {true cat}]\n"),
               ("kitty", None)]  # a second headword for the cat entry
    data, index, offsets = b"", [], {}
    for head, body in entries:
        if body is None:
            offset, length = offsets["cat"]
        else:
            raw = body.encode()
            offset, length = len(data), len(raw)
            offsets[head] = (offset, length)
            data += raw
        index.append(f"{head}\t{_dictd_base64(offset)}\t{_dictd_base64(length)}")
    with gzip.open(tmp_path / "toy.dict.dz", "wb") as f:
        f.write(data)
    (tmp_path / "toy.index").write_text("\n".join(index) + "\n")
    pairs = list(dictd.read_pairs("toy", str(tmp_path)))
    assert pairs == [("cat", "n 1: a small feline [syn: true cat]", "dict-toy:cat")]


def test_manpage_sections(tmp_path):
    page = tmp_path / "frob.1.gz"
    with gzip.open(page, "wt") as f:
        f.write('.\\" a comment\n.TH FROB 1\n.SH NAME\nfrob \\- twiddle the \\fBbits\\fR\n.SH SYNOPSIS\n'
                '.B frob\n.SH DESCRIPTION\n.B frob\nreads\n.IR file s\nand \\(lqtwiddles\\(rq them.\n'
                '.TP\n.B \\-v\nverbose\n.SH SEE ALSO\nx\n')
    assert manpages.read_page(str(page)) == ("frob - twiddle the bits",
                                             'frob reads files and "twiddles" them. -v verbose')
    redirect = tmp_path / "alias.1"
    redirect.write_text(".so man1/frob.1\n")
    assert manpages.read_page(str(redirect)) is None


def test_rst_sections_and_api_entries(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "toy.rst.txt").write_text(
        ":mod:`toy` --- A toy module\n============================\n\n.. module:: toy\n\n"
        "The **toy** module does :func:`nothing <toy.nothing>` at all.\n\n"
        "Functions\n---------\n\n.. function:: nothing(x, \\\n              y=1)\n\n"
        "   Return ``None`` for *x*.\n\n   Example::\n\n      >>> nothing(1)\n\n"
        ".. code-block:: python\n\n   secret_code()\n")
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / "other.rst.txt").write_text("Other\n=====\n\nText.\n")
    pairs = list(rst_sections.read_pairs(str(tmp_path), "toy", exclude=("skip",)))
    assert pairs[0] == ("toy --- A toy module", "The toy module does nothing at all.", "toy:lib/toy.rst.txt")
    assert pairs[1][0] == "Functions (toy --- A toy module)"
    assert "Return None for x. Example:" in pairs[1][1] and "secret_code" not in pairs[1][1]
    assert pairs[2] == ("toy.nothing(x, y=1)", "Return None for x. Example:", "toy-api:lib/toy.rst.txt")
    assert len(pairs) == 3


def test_clean_pair_and_keys():
    assert build_data.clean_pair("debian", "a tool", "too short", 50) is None
    long_text = " ".join(["word"] * 30)
    assert build_data.clean_pair("debian", " a  tool ", long_text, 10) == ("a tool", " ".join(["word"] * 10))
    assert build_data.clean_pair("wordnet", "cat", "a small feline", 50) == ("cat", "a small feline")
    assert build_data.clean_pair("wordnet", "cat", "1 2 3 4 5 6 7", 50) is None  # not words
    assert dedup_key("Hello,  World!") == dedup_key("hello world")
    assert truncate_words("a b c", 2) == "a b"


def test_mine_negatives_by_hand():
    # unit vectors in 2-D at the given angles: queries equal their positives
    angles = np.deg2rad([0.0, 10.0, 30.0, 1.0, 90.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    ids, scores, own = build_data.mine_negatives(vectors, vectors, k=2, near_duplicate=0.999, margin=0.95)
    np.testing.assert_allclose(own, 1.0, rtol=1e-6)
    # row 0: row 3 (1 degree) is a near-duplicate; row 1 (cos 10 = 0.985) is above 0.95 x the positive;
    # left: row 2 (cos 30 = 0.866), then row 4 (cos 90 = 0)
    assert ids[0] == [2, 4]
    np.testing.assert_allclose(scores[0], [np.cos(np.deg2rad(30)), 0.0], atol=1e-6)
    assert ids[4] == [2, 1]  # cos 60 then cos 80
    assert all(i not in chosen for i, chosen in enumerate(ids))


def test_committed_sample():
    if not SAMPLE.exists():
        pytest.skip("no committed sample")
    assert os.path.getsize(SAMPLE) < 200_000
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 200
    sources = {r["source"] for r in rows}
    assert {"debian", "man", "python-doc", "linux-doc", "wordnet"} <= sources
    for row in rows:
        assert row["query"] and row["positive"] and row["split"] in ("train", "dev")
        if row["split"] == "train":
            assert len(row["negatives"]) == 1 and len(row["scores"]) == 2
            assert row["scores"][0] > row["scores"][1] and row["negatives"][0] != row["positive"]
    train = {dedup_key(r["positive"]) for r in rows if r["split"] == "train"}
    assert not train & {dedup_key(r["positive"]) for r in rows if r["split"] == "dev"}


def test_collect_reuses_pairs_with_a_smaller_cap_and_skips_sources(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    rows = [{"query": f"q{i}", "positive": f"passage number {i} " * 4, "source": src, "origin": "x"}
            for i, src in enumerate(["debian"] * 30 + ["linux-doc"] * 10)]
    (full / "pairs.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:35]))
    (full / "pairs.dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[35:]))
    out = tmp_path / "small"
    out.mkdir()
    build_data.main(["--stages", "collect", "--reuse-pairs", str(full), "--max-per-source", "12",
                     "--skip-sources", "linux-doc", "--dev-permille", "200", "--out", str(out)])
    kept = [json.loads(line) for split in ("train", "dev")
            for line in (out / f"pairs.{split}.jsonl").read_text().splitlines()]
    assert len(kept) == 12 and {r["source"] for r in kept} == {"debian"}
    # the cap keeps the first pairs in the hash order, the same ones whatever the input order
    ranked = sorted(rows[:30], key=lambda r: build_data.stable_hash(dedup_key(r["positive"])))[:12]
    assert sorted(r["query"] for r in kept) == sorted(r["query"] for r in ranked)
    with pytest.raises(SystemExit, match="unknown sources"):
        build_data.main(["--stages", "collect", "--reuse-pairs", str(full), "--skip-sources", "nope",
                         "--out", str(out)])


def test_docstring_split_and_markup():
    numpydoc = ("Gammatone filter design.\n\nThis function computes the coefficients of an FIR or IIR\n"
                "gammatone digital filter [1]_, see :func:`scipy.signal.lfilter` and ``order``.\n\n"
                "Parameters\n----------\nfreq : float\n    Centre frequency.\n")
    assert docstrings.split_docstring(numpydoc) == (
        "Gammatone filter design.",
        "This function computes the coefficients of an FIR or IIR gammatone digital filter, "
        "see scipy.signal.lfilter and order.")
    sympy_style = ("Returns the motion parameters.\n\nExplanation\n===========\n\nIf a higher order ...\n")
    assert docstrings.split_docstring(sympy_style) is None  # nothing before the first section
    doctest = "Sum of a sequence.\n\nAdds the items of an iterable, left to right, like this::\n\n    >>> 1 + 2\n"
    assert docstrings.split_docstring(doctest) == ("Sum of a sequence.",
                                                   "Adds the items of an iterable, left to right, like this:")


def test_docstring_reader_parses_without_importing(tmp_path, monkeypatch):
    package = tmp_path / "fakesci"
    (package / "tests").mkdir(parents=True)
    (package / "__init__.py").write_text('"""Fake science.\n\nA package made for this test only."""\n'
                                         'raise RuntimeError("importing is not allowed")\n')
    (package / "waves.py").write_text(
        'def damped(x):\n    """Damped oscillation.\n\n    The amplitude decays exponentially with time.\n\n'
        '    Parameters\n    ----------\n    x : float\n    """\n\n'
        'def _private():\n    """Hidden.\n\n    Not read: a private name."""\n\n'
        'class Wave:\n    """A travelling wave.\n\n    It carries energy along the medium."""\n'
        '    def speed(self):\n        """Phase speed."""\n')
    (package / "tests" / "test_waves.py").write_text('def test():\n    """Test.\n\n    Not read: a test."""\n')
    (package / "broken.py").write_text("def (:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pairs = list(docstrings.read_pairs(["fakesci"]))
    assert pairs == [
        ("Fake science.", "A package made for this test only.", "pypi-doc:fakesci"),
        ("Damped oscillation.", "The amplitude decays exponentially with time.", "pypi-doc:fakesci.waves.damped"),
        ("A travelling wave.", "It carries energy along the medium.", "pypi-doc:fakesci.waves.Wave"),
    ]
    with pytest.raises(FileNotFoundError, match="not installed"):
        list(docstrings.read_pairs(["no_such_package_here"]))


def test_reuse_teacher_rejects_embeddings_that_do_not_match_the_pairs(tmp_path):
    rows = [{"id": "train-0", "query": "q", "positive": "a passage", "source": "debian", "origin": "x"}]
    for split in ("train", "dev"):
        (tmp_path / f"pairs.{split}.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
        for kind in ("query", "positive"):
            np.save(tmp_path / f"{split}.{kind}.npy", np.ones((1, 4), np.float32))
    known = build_data.known_embeddings([str(tmp_path)])
    assert set(known) == {"q", "a passage"}
    np.save(tmp_path / "train.positive.npy", np.ones((2, 4), np.float32))
    with pytest.raises(SystemExit, match="does not match"):
        build_data.known_embeddings([str(tmp_path)])


def test_sci_doc_reads_each_packages_sphinx_sources(tmp_path, monkeypatch):
    folder = tmp_path / "html" / "_sources"
    folder.mkdir(parents=True)
    (folder / "units.rst.txt").write_text("Units\n=====\n\nPhysical quantities carry a unit and convert between systems.\n")

    class Listed:
        def __init__(self, code, out):
            self.returncode, self.stdout = code, out

    def dpkg(command, **kwargs):
        assert command[:2] == ["dpkg", "-L"]
        if command[2] == "python-toy-doc":
            return Listed(0, f"/usr\n{tmp_path}/html\n{folder}\n{folder}/units.rst.txt\n")
        return Listed(1, "")

    monkeypatch.setattr(build_data.subprocess, "run", dpkg)
    assert build_data.sphinx_source_folders("python-toy-doc") == [str(folder)]
    assert list(build_data.sci_doc_pairs(["python-toy-doc"])) == [
        ("Units", "Physical quantities carry a unit and convert between systems.", "toy:units.rst.txt")]
    with pytest.raises(SystemExit, match="not installed"):
        build_data.sphinx_source_folders("python-absent-doc")


def test_heldout_packages_are_never_a_training_source():
    assert not set(build_data.SCI_DOC_HELD_OUT) & set(build_data.SCI_DOC_PACKAGES)
    assert set(build_data.SCI_DOC_HELD_OUT) <= set(build_data.APT_PACKAGES)
    assert "sci-doc" in build_data.LICENCES


def test_heldout_ndcg_by_hand():
    import heldout_eval

    # query 0 finds its passage first; query 1 finds passage 0 first, then its own (rank 1)
    queries = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    passages = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert heldout_eval.ndcg_at_10_per_query(queries, passages) == pytest.approx([1.0, 1.0 / np.log2(3.0)])


def test_crop_pair_spans():
    text = " ".join(f"w{i}" for i in range(80))
    for seed in range(50):
        query, positive = build_data.crop_pair(text, seed)
        assert 2 <= len(query.split()) <= 12 and 12 <= len(positive.split()) <= 48
        assert f" {query} " in f" {text} " and f" {positive} " in f" {text} "
    assert build_data.crop_pair(text, 7) == build_data.crop_pair(text, 7)
    assert build_data.crop_pair("too short to cut twice", 1) is None
    assert build_data.crop_pair(" ".join(["1.5"] * 60), 1) is None  # not words


def test_collect_crops_every_text_read_and_keeps_each_on_its_parents_side(tmp_path, monkeypatch):
    texts = {f"debian:{i}": " ".join(f"topic{i} word{j}" for j in range(30)) for i in range(40)}

    def sources(skip=frozenset()):
        for origin, text in texts.items():
            yield "debian", f"summary {origin}", text, origin

    monkeypatch.setattr(build_data, "read_all_sources", sources)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        build_data.main(["--stages", "collect", "--cap", "debian=10", "--cap", "crops=25", "--max-words", "40",
                         "--dev-permille", "300", "--out", str(out)])
        runs.append({split: [json.loads(line) for line in (out / f"pairs.{split}.jsonl").read_text().splitlines()]
                     for split in ("train", "dev")})
    assert runs[0] == runs[1]  # deterministic
    kept = {r["origin"] for rows in runs[0].values() for r in rows if r["source"] == "debian"}
    crops = [(split, r) for split, rows in runs[0].items() for r in rows if r["source"] == "crops"]
    assert len(kept) == 10 and len(crops) == 25
    parents = {r["origin"].removeprefix("crop:") for _, r in crops}
    assert parents - kept, "crops come from the texts the cap left out too"
    for split, row in crops:
        parent = texts[row["origin"].removeprefix("crop:")]
        assert row["query"] in parent and row["positive"] in parent
        assert split == build_data.split_of(truncate_words(parent, 40), 300)
    with pytest.raises(SystemExit, match="fresh collect"):
        build_data.main(["--stages", "collect", "--reuse-pairs", str(tmp_path / "a"), "--cap", "crops=5",
                         "--out", str(tmp_path / "c")])
