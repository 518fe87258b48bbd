"""Bi-encoder training for Mamba retrievers (needs the `train` extra: torch and tqdm).

    from mambaret.train import Trainer, TrainingArguments, load_jsonl_pairs
    model_dir = resolve_model_dir("path/to/mamba-130m-hf")
    tokenizer, files = load_tokenizer(model_dir)
    trainer = Trainer(load_model(model_dir), tokenizer, TrainingArguments(epochs=2),
                      load_jsonl_pairs("pairs.jsonl"), "out", tokenizer_files=files)
    trainer.train(); trainer.save_model()        # out/ loads in MambaEncoder.from_pretrained
"""
from .data import (TrainExample, load_beir_pairs, load_jsonl_pairs, load_training_data, mine_hard_negative_ids,
                   mine_hard_negatives, mining_pool)
from .losses import (CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss, kl_distillation_loss,
                     mse_distillation_loss, multiple_negatives_ranking_loss)
from .matryoshka import AdaptiveLayerLoss, CachedMatryoshkaLoss, LossBatch, MatryoshkaLoss, matryoshka_2d_loss
from .optim import linear_schedule, make_optimizer, no_weight_decay, parameter_groups, warmup_steps
from .saving import list_checkpoints
from .teacher import PrecomputedEmbeddings
from ..arch.paths import resolve_model_dir
from .trainer import BiEncoder, Trainer, TrainingArguments, TrainState, dev_ndcg, load_model, load_tokenizer

__all__ = [
    "AdaptiveLayerLoss", "BiEncoder", "CachedMatryoshkaLoss", "LossBatch", "MatryoshkaLoss", "matryoshka_2d_loss", "CachedMultipleNegativesRankingLoss", "MultipleNegativesRankingLoss", "PrecomputedEmbeddings", "TrainExample", "TrainState",
    "Trainer", "TrainingArguments", "dev_ndcg", "kl_distillation_loss", "linear_schedule", "list_checkpoints",
    "load_beir_pairs", "load_jsonl_pairs", "load_model", "load_tokenizer", "load_training_data", "make_optimizer",
    "mine_hard_negative_ids", "mine_hard_negatives", "mining_pool", "mse_distillation_loss", "multiple_negatives_ranking_loss", "no_weight_decay",
    "parameter_groups", "resolve_model_dir", "warmup_steps",
]
