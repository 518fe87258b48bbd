"""Tokenization: pinned GPT-NeoX ids, EOS appended, the truncation rule, id-list inputs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mambaret as mr
from mambaret.arch.random_model import write_random_model

# ids from ../shared/data/tokenizers/gpt-neox-20b.json, without special tokens
PINNED = {
    "Hello, world!": [12092, 13, 1533, 2],
    "Café naïve résumé — déjà vu": [36, 2320, 860, 36060, 9568, 2204, 860, 1905, 41751, 24821],
    "检索增强生成": [46291, 211, 20557, 97, 34693, 241, 12811, 120, 20025, 21991],
    "emoji 🎉🚀 test": [43208, 8020, 22692, 225, 220, 14931, 237, 211, 1071],
    "": [],
    "   \t\n  ": [50275, 186, 187, 50276],
    "The quick brown fox jumps over the lazy dog.": [510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15],
}
EOS = 0


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tokenizer_json):
    path = write_random_model(str(tmp_path_factory.mktemp("tok")), seed=1, hidden_size=16, num_hidden_layers=1,
                              vocab_size=50280, state_size=4, tokenizer_json=str(tokenizer_json))
    return mr.MambaEncoder.from_pretrained(path, threads=1)


def test_pinned_ids_with_eos(encoder):
    texts = list(PINNED)
    ids = encoder.tokenize(texts)
    for text, got in zip(texts, ids):
        assert got == PINNED[text] + [EOS], text


def test_long_text(encoder):
    text = "abc def " * 1250  # 10,000 characters
    ids = encoder.tokenize([text])[0]
    assert len(ids) == 3751
    assert ids[:3] == [19758, 809, 490] and ids[-2:] == [209, EOS]
    assert sum(ids) == 1728159


def test_empty_text_is_eos_alone(encoder):
    assert encoder.tokenize([""]) == [[EOS]]
    emb = encoder.encode("")
    assert np.allclose(emb, encoder.encode([[EOS]])[0])


def test_truncation_rule_and_warning(tmp_path, tokenizer_json):
    path = write_random_model(str(tmp_path), seed=1, hidden_size=16, num_hidden_layers=1, vocab_size=50280,
                              state_size=4, tokenizer_json=str(tokenizer_json))
    enc = mr.MambaEncoder.from_pretrained(path, threads=1, max_length=5)
    text = "The quick brown fox jumps over the lazy dog."
    ids = enc.tokenize([text, "Hello"])
    assert ids[0] == PINNED[text][:4] + [EOS]
    assert ids[1] == [12092, EOS]
    with pytest.warns(UserWarning, match="1 of 2 inputs were longer than max_length=5"):
        emb = enc.encode([text, "Hello"])
    np.testing.assert_array_equal(emb[0], enc.encode([PINNED[text][:4] + [EOS]])[0])
    assert enc.truncation.truncated == 1  # tokenize() counted nothing; 5 ids given are not over the limit
    assert enc.truncation.seen == 3
    assert enc.truncation.tokens_kept == 5 + 2 + 5


def test_tokenize_counts_no_truncation(tmp_path, tokenizer_json):
    path = write_random_model(str(tmp_path), seed=1, hidden_size=16, num_hidden_layers=1, vocab_size=50280,
                              state_size=4, tokenizer_json=str(tokenizer_json))
    enc = mr.MambaEncoder.from_pretrained(path, threads=1, max_length=5)
    text = "The quick brown fox jumps over the lazy dog."
    enc.tokenize([text, "Hello"])
    assert (enc.truncation.truncated, enc.truncation.seen) == (0, 0)
    with pytest.warns(UserWarning, match="1 of 2 inputs"):
        enc.encode([text, "Hello"])
    assert (enc.truncation.truncated, enc.truncation.seen) == (1, 2)


def _varied_texts(seed: int, count: int) -> list[str]:
    """Texts built to test cuts: contractions, space and newline runs (added tokens), tabs,
    punctuation runs, digits, accents and combining marks, CJK, emoji, special tokens."""
    rng = np.random.default_rng(seed)
    parts = ["the", "The", "it's", "we're", "they'll", "I'd", "don't", "'re", "'s", " ", "  ", "   ", " " * 24,
             " " * 30, "\n", "\n\n", "\t", " \t ", "\r\n", "!!!", "...", "----------", "12345", "3.14", "café",
             "cafe\u0301", "e\u0301\u0302", "\u0301", "naïve", "检索增强生成", "🎉🚀", "<|endoftext|>", "<|padding|>",
             "a", "xyz", "(", ")", "\u00a0", "\u3000", "\u2028"]
    texts = []
    for _ in range(count):
        n = int(rng.integers(0, 400))
        texts.append("".join(parts[i] for i in rng.integers(0, len(parts), n)))
    return texts


@pytest.fixture(scope="module")
def tokenizers_pair(tokenizer_json):
    from tokenizers import Tokenizer

    from mambaret.encoding.tokenization import TextTokenizer

    return Tokenizer.from_file(str(tokenizer_json)), TextTokenizer.from_file(str(tokenizer_json))


@pytest.mark.parametrize("max_length", [1, 2, 3, 5, 17, 64])
def test_truncating_while_tokenizing_gives_the_whole_texts_ids(tokenizers_pair, max_length):
    """With max_length a long text is tokenized only up to a cut; its ids are those of the
    whole text, cut by the rule ids[:max_length-1] + [eos]."""
    from mambaret.encoding.tokenization import TruncationStats

    whole, ours = tokenizers_pair
    assert ours.cuts_cleanly
    texts = _varied_texts(max_length, 150) + ["x" + " " * 24 + "x" * 3] * 2 + [("x" + " " * 24) * 200,
                                                                            "x" * 5000, "检索" * 3000, ""]
    stats = TruncationStats()
    got = ours.encode(texts, max_length, stats)
    cut = 0
    for text, ids in zip(texts, got):
        full = whole.encode(text, add_special_tokens=False).ids
        assert ids == full[:max_length - 1] + [EOS], repr(text)
        cut += len(full) + 1 > max_length
    assert stats.truncated == cut and stats.seen == len(texts)


def test_long_text_is_not_tokenized_whole(encoder, tokenizer_json):
    """A 1M-character text with max_length=512 is tokenized only up to a few thousand
    characters (it took seconds and gigabytes when tokenized whole)."""
    from mambaret.encoding.tokenization import TextTokenizer

    seen: list[int] = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode_batch(self, texts, **kw):
            seen.extend(len(t) for t in texts)
            return self.inner.encode_batch(texts, **kw)

        def encode(self, text, **kw):
            seen.append(len(text))
            return self.inner.encode(text, **kw)

    tok = TextTokenizer.from_file(str(tokenizer_json))
    text = "The quick brown fox jumps over the lazy dog. " * 22_000
    expected = tok.tokenizer.encode(text[:20_000], add_special_tokens=False).ids[:511] + [EOS]
    tok.tokenizer = Recording(tok.tokenizer)
    stats = mr.encoding.tokenization.TruncationStats()
    assert tok.encode([text], 512, stats) == [expected]
    assert max(seen) < 10_000 and stats.truncated == 1


def test_exact_max_length_is_not_truncated(tmp_path, tokenizer_json):
    path = write_random_model(str(tmp_path), seed=1, hidden_size=16, num_hidden_layers=1, vocab_size=50280,
                              state_size=4, tokenizer_json=str(tokenizer_json))
    enc = mr.MambaEncoder.from_pretrained(path, threads=1, max_length=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.tokenize(["Hello, world!"]) == [PINNED["Hello, world!"] + [EOS]]
    assert enc.truncation.truncated == 0


def test_id_lists_used_as_given_unless_add_eos(encoder):
    assert encoder.tokenize([[5, 6, 7]]) == [[5, 6, 7]]
    assert encoder.tokenize([[5, 6, 7]], add_eos=True) == [[5, 6, 7, EOS]]
    assert encoder.tokenize([np.array([5, 6], dtype=np.int64)]) == [[5, 6]]


def test_id_arrays_stay_int32_arrays_and_match_lists(encoder):
    """A long pre-tokenized document is not turned into Python ints on its way to the engine."""
    ids = np.random.default_rng(1).integers(0, 300, 5000)
    kept = encoder._token_ids([ids.astype(np.int64), ids.astype(np.uint16)], add_eos=True)
    assert all(isinstance(k, np.ndarray) and k.dtype == np.int32 for k in kept)
    assert kept[0].tolist() == ids.tolist() + [EOS]
    by_list = encoder.encode([ids.tolist()])
    np.testing.assert_array_equal(encoder.encode([ids.astype(np.int64)]), by_list)
    np.testing.assert_array_equal(encoder.encode(ids.astype(np.int32)[None, :]), by_list)
    with pytest.raises(ValueError, match="int32 range"):
        encoder.encode([np.array([1, 2**31], dtype=np.int64)])
    short = mr.MambaEncoder(encoder.model, encoder.dims, encoder.tokenizer, max_length=10)
    cut = short._token_ids([ids], add_eos=True)[0]
    assert isinstance(cut, np.ndarray) and cut.tolist() == ids[:9].tolist() + [EOS]


def test_text_and_ids_agree(encoder):
    text = "Hello, world!"
    by_text = encoder.encode(text)
    by_ids = encoder.encode(PINNED[text] + [EOS])
    np.testing.assert_array_equal(by_text, by_ids)
