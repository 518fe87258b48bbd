"""Our MambaModel inside sentence-transformers' trainer: a few SentenceTransformerTrainer steps
with MultipleNegativesRankingLoss give the losses, gradients and parameters of mambaret.train.

The model is wrapped as the first module of a SentenceTransformer (then last-token Pooling and
Normalize, as an exported folder has). Every step's batch is the whole data set, so the trainer's
shuffling cannot change what a step sees (InfoNCE does not depend on the order inside a batch).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from train_support import synthetic_pairs, write_tiny_model  # noqa: E402

from mambaret.encoding.tokenization import TruncationStats  # noqa: E402
from mambaret.train import Trainer, TrainExample, TrainingArguments, load_model, load_tokenizer  # noqa: E402

try:
    from sentence_transformers.base.modules import InputModule
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
except ImportError:  # sentence-transformers before 6
    pytest.skip("needs sentence-transformers' InputModule (version 6 or later)", allow_module_level=True)


class MambaTransformer(InputModule):
    """A sentence-transformers input module over mambaret.nn.MambaModel and our tokenizer
    (EOS appended, right padding, the attention mask marks the real tokens)."""

    def __init__(self, model, tokenizer, max_length):
        super().__init__()
        self.model = model
        self.text_tokenizer = tokenizer
        self.max_seq_length = max_length

    def preprocess(self, inputs, prompt=None, **kwargs):
        texts = [prompt + t for t in inputs] if prompt else list(inputs)
        ids = self.text_tokenizer.encode(texts, self.max_seq_length, TruncationStats())
        width = max(len(x) for x in ids)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, features, **kwargs):
        features["token_embeddings"] = self.model(features["input_ids"], features["attention_mask"])
        return features

    def get_embedding_dimension(self):
        return self.model.config.hidden_size

    get_word_embedding_dimension = get_embedding_dimension

    def save(self, output_path, *args, **kwargs):
        self.model.save_pretrained(output_path)


def test_sentence_transformers_trainer_matches_mambaret_train(tmp_path):
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    torch.set_num_threads(1)
    model_dir = write_tiny_model(str(tmp_path / "model"), seed=6)
    tokenizer, files = load_tokenizer(model_dir)
    data = synthetic_pairs(8, seed=2, negatives=1)
    steps, lr, max_length = 3, 5e-3, 16

    # ---- mambaret.train, recording each step's loss and the gradients the optimizer sees
    ours = Trainer(load_model(model_dir), tokenizer,
                   TrainingArguments(epochs=steps, batch_size=len(data), lr=lr, weight_decay=0.0, max_length=max_length,
                                     show_progress_bar=False),
                   [TrainExample(q, p, n) for q, p, n in data], str(tmp_path / "ours"), tokenizer_files=files)
    our_grads = []
    ours.optimizer.register_step_pre_hook(
        lambda opt, a, k: our_grads.append({n: p.grad.clone() for n, p in ours.model.named_parameters()}))
    ours.train()
    our_losses = [h["loss"] for h in ours.state.history]

    # ---- sentence-transformers' trainer on the same start, data and hyper-parameters
    backbone = load_model(model_dir)
    model = SentenceTransformer(modules=[MambaTransformer(backbone, tokenizer, max_length),
                                         Pooling(backbone.config.hidden_size, pooling_mode="lasttoken"),
                                         Normalize()], device="cpu")
    their_losses, their_grads = [], []

    class RecordingLoss(MultipleNegativesRankingLoss):
        def forward(self, features, labels):
            loss = super().forward(features, labels)
            their_losses.append(float(loss.detach()))
            return loss

    class RecordGrads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            their_grads.append({n: p.grad.clone() for n, p in backbone.named_parameters()})

    dataset = Dataset.from_dict({"anchor": [q for q, _, _ in data], "positive": [p for _, p, _ in data],
                                 "negative": [n[0] for _, _, n in data]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "st"), num_train_epochs=steps, per_device_train_batch_size=len(data),
        learning_rate=lr, warmup_ratio=0.1, lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0,
        seed=0, use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no",
        dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=RecordingLoss(model, scale=20.0), callbacks=[RecordGrads()])
    trainer.train()

    assert len(their_losses) == len(our_losses) == steps
    assert their_losses == pytest.approx(our_losses, rel=1e-5)
    assert len(their_grads) == len(our_grads) == steps
    for step, (theirs, mine) in enumerate(zip(their_grads, our_grads)):
        for name, grad in mine.items():
            err = float((theirs[name] - grad).norm() / grad.norm().clamp_min(1e-30))
            assert err < 1e-4, f"step {step}, {name}: relative L2 difference {err:.2e}"
    start = load_model(model_dir).state_dict()
    final = ours.model.state_dict()
    moved = final["layers.0.mixer.in_proj.weight"] - start["layers.0.mixer.in_proj.weight"]
    assert float(moved.norm()) > 1e-3
    for name, value in backbone.state_dict().items():
        err = float((value - final[name]).norm() / final[name].norm())
        assert err < 1e-4, f"{name}: relative L2 difference {err:.2e} after {steps} steps"
