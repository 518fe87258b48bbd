"""Shared fixtures: seeded random HF Mamba checkpoints and the ../shared data folder."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from a test
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pathlib

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TOKENIZER_JSON = SHARED_DATA / "tokenizers" / "gpt-neox-20b.json"


def shared_file(*parts: str) -> pathlib.Path:
    """A file under ../shared/data, or a skip saying it is absent (a user's clone has none)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: the shared data folder sits beside the repository in CI only")
    return path


@pytest.fixture(scope="session")
def tokenizer_json() -> pathlib.Path:
    return shared_file("tokenizers", "gpt-neox-20b.json")


def hf_classes(family: str):
    """transformers' (config, model, causal LM) classes of an architecture's model_type."""
    import transformers

    prefix = {"mamba": "Mamba", "mamba2": "Mamba2", "falcon_mamba": "FalconMamba"}[family]
    return tuple(getattr(transformers, prefix + suffix) for suffix in ("Config", "Model", "ForCausalLM"))


def build_hf_model(config_kwargs: dict, *, seed: int = 0, causal_lm: bool = False, perturb: float = 0.05,
                   embedding_perturb: float | None = None, family: str = "mamba"):
    """A seeded transformers model of one architecture (Mamba, Mamba2 or FalconMamba) whose every
    parameter is perturbed after init, so D, biases and norm weights are not 1 or 0. Returns the
    fp32 model in eval mode."""
    import torch

    config_class, model_class, lm_class = hf_classes(family)
    torch.manual_seed(seed)
    config = config_class(**config_kwargs)
    model = (lm_class if causal_lm else model_class)(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = perturb
            if embedding_perturb is not None and "embedding" in name:
                scale = embedding_perturb
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return model


def save_hf_model(model, path, dtype=None) -> str:
    """save_pretrained, optionally cast to float16 / bfloat16 first (the model itself is kept)."""
    import copy

    import torch

    to_save = model
    if dtype is not None:
        to_save = copy.deepcopy(model).to(getattr(torch, dtype))
    to_save.save_pretrained(str(path))
    return str(path)


def hf_states(model, ids) -> np.ndarray:
    """HF's final-norm hidden states [L, d] for one sequence, in fp32."""
    import torch

    backbone = model.backbone if hasattr(model, "backbone") else model
    with torch.no_grad():
        out = backbone(torch.tensor([list(ids)], dtype=torch.long)).last_hidden_state[0]
    return out.float().numpy()


def assert_close_to_reference(ours: np.ndarray, ref: np.ndarray, rel_l2: float, what: str = "") -> None:
    """The parity criterion: ||ours - ref|| / ||ref|| <= rel_l2 and
    max |ours - ref| <= 1e-4 * max(1, max |ref|)."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    err = np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30)
    assert err <= rel_l2, f"{what}: relative L2 error {err:.3g} > {rel_l2:g}"
    max_abs = np.abs(ours - ref).max() if ours.size else 0.0
    bound = 1e-4 * max(1.0, np.abs(ref).max() if ref.size else 0.0)
    assert max_abs <= bound, f"{what}: max abs error {max_abs:.3g} > {bound:.3g}"


def assert_encoder_matches(enc, reference, sequences, what: str, rel_l2: float = 1e-5, **encode_kwargs) -> None:
    """Every token state and the pooled embedding of each sequence (encoded together, so a packed
    batch with micro-batch boundaries where max_tokens puts them) against the transformers model."""
    pooled = enc.encode(sequences, **encode_kwargs)
    states = enc.encode(sequences, output_value="token_embeddings", **encode_kwargs)
    for ids, emb, tokens in zip(sequences, pooled, states):
        ref = hf_states(reference, ids)
        assert_close_to_reference(tokens, ref, rel_l2, f"{what} all states, length {len(ids)}")
        assert_close_to_reference(emb, ref[-1], rel_l2, f"{what} pooled, length {len(ids)}")


@pytest.fixture
def collection(tmp_path):
    """The tiny TREC collection (tests/tiny_collection.py) as files: doc-text.trec, query-text.trec, qrels."""
    from tiny_collection import DOCS, QRELS, TOPICS

    (tmp_path / "doc-text.trec").write_text(DOCS)
    (tmp_path / "query-text.trec").write_text(TOPICS)
    (tmp_path / "qrels").write_text(QRELS)
    return tmp_path


@pytest.fixture
def tiny_model_dir(tmp_path_factory):
    """A small seeded random checkpoint written without torch (fast)."""
    from mambaret.arch.random_model import write_random_model

    path = tmp_path_factory.mktemp("tiny")
    return write_random_model(str(path), seed=3, hidden_size=24, num_hidden_layers=2, vocab_size=300,
                              state_size=4, conv_kernel=4, expand=2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """MAMBARET_REQUIRE_GPU=1 turns the skip of a `gpu`-marked test into a failure, so a GPU
    machine whose driver, cuBLAS or extension does not load cannot pass silently."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("MAMBARET_REQUIRE_GPU") == "1"
            and item.get_closest_marker("gpu") is not None):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"MAMBARET_REQUIRE_GPU=1 but this GPU test was skipped: {reason}"
