"""LETSTrainer in a pipeline of your own: not GLUE, your dataset, your loss, your SAM variant, frozen layers and a
callback that reads rho. Runs offline in seconds on a tiny BERT: `python docs/examples/custom_pipeline.py`."""

import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback

from lets_hf import LETSTrainer, LETSTrainingArguments, register_perturbation


# ---- 1. your data: a toy sentiment task with a 3:1 class imbalance -----------------------------------------------
def make_split(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    good, bad = ["great", "fine", "lovely", "superb"], ["awful", "bad", "dull", "poor"]
    rows = []
    for _ in range(n):
        label = int(torch.rand(1, generator=g) < 0.25)  # 1 = negative, the rare class
        words = bad if label else good
        text = " ".join(words[int(i)] for i in torch.randint(0, 4, (5,), generator=g))
        rows.append({"text": f"the film was {text}", "label": label})
    return Dataset.from_list(rows)


vocab = {
    w: i
    for i, w in enumerate("[PAD] [UNK] [CLS] [SEP] the film was great fine lovely superb awful bad dull poor".split())
}


def encode(batch):  # a word-level tokenizer, enough for the example and fully offline
    ids = [[2, *(vocab.get(w, 1) for w in text.split()), 3] for text in batch["text"]]
    return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": batch["label"]}


train = make_split(256, seed=0).map(encode, batched=True, remove_columns=["text", "label"])
heldout = make_split(64, seed=1).map(encode, batched=True, remove_columns=["text", "label"])  # your own lets_dataset
dev = make_split(64, seed=2).map(encode, batched=True, remove_columns=["text", "label"])


# ---- 2. your model, with the embeddings frozen (LETS perturbs only requires_grad parameters) ---------------------
torch.manual_seed(0)
model = BertForSequenceClassification(
    BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
)
for p in model.bert.embeddings.parameters():
    p.requires_grad_(False)
frozen_before = model.bert.embeddings.word_embeddings.weight.clone()


# ---- 3. your SAM variant: registered once, selected by name --------------------------------------------------------
@register_perturbation("layerwise_sam")
def layerwise_sam(params, grads, *, eta):
    """Each tensor perturbed along its own normalised gradient, rescaled so that the whole step has norm 1."""
    per_tensor = [g / (g.norm() + 1e-12) for g in grads]
    total = torch.sqrt(sum((d * d).sum() for d in per_tensor))
    return [d / total for d in per_tensor]


# ---- 4. your loss: class-weighted cross-entropy; LETSTrainer uses it in the ascent, descent and held-out passes -----
class WeightedTrainer(LETSTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = torch.tensor([1.0, 3.0], device=outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


# ---- 5. a callback that reads rho as training goes -----------------------------------------------------------------
class RhoPrinter(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "rho" in logs:
            print(f"step {state.global_step:3d}  loss {logs['loss']:.3f}  rho {logs['rho']:.4f}")


args = LETSTrainingArguments(
    output_dir="runs/custom_pipeline",
    report_to="none",
    use_cpu=True,
    save_strategy="no",
    disable_tqdm=True,
    num_train_epochs=2,
    per_device_train_batch_size=16,
    learning_rate=3e-3,
    logging_steps=8,
    seed=0,
    sam_variant="layerwise_sam",
    sam_rho=0.05,
    lets=True,
    lets_interval=2,
    lets_lr=0.05,
)
trainer = WeightedTrainer(
    model=model, args=args, train_dataset=train, eval_dataset=dev, lets_dataset=heldout, callbacks=[RhoPrinter()]
)  # every example has 10 tokens: the default collator stacks them
trainer.train()

metrics = trainer.evaluate()
print(f"dev loss {metrics['eval_loss']:.3f}, final rho {trainer.rho:.4f}, {len(trainer.lets_history)} hyper-steps")
assert torch.equal(model.bert.embeddings.word_embeddings.weight, frozen_before), "frozen layers must not move"
assert trainer.rho != 0.05 and len(trainer.lets_history) == trainer.state.global_step // 2
