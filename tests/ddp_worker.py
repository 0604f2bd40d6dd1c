"""Run under `torchrun --nproc_per_node 2 tests/ddp_worker.py OUT`: trains each DDP_CASES configuration on CPU (gloo)
and saves every rank's parameters, rho and hypergradients to OUT/<case>_rank<r>.pt for tests/test_distributed.py to
compare."""

import os
import sys

import torch
from toy import params_of, tiny_bert, token_data

from lets_hf import LETSTrainer, LETSTrainingArguments

B, HELDOUT_B, STEPS = 4, 3, 4

# name -> (LETSTrainingArguments overrides, gradient accumulation steps)
DDP_CASES = {
    "sam_sync": (dict(lets=False), 1),
    "lets_sync": (dict(sam_sync_perturbation=True), 1),
    "lets_per_rank": (dict(sam_sync_perturbation=False), 1),
    "lets_sync_accum2": (dict(sam_sync_perturbation=True), 2),
    "lets_per_rank_accum2": (dict(sam_sync_perturbation=False), 2),
    "lets_per_rank_fisher": (dict(sam_sync_perturbation=False, lets_hvp="fisher", sam_variant="asam"), 1),
    "lets_sync_interval2": (dict(sam_sync_perturbation=True, lets_interval=2, lets_horizon="interval"), 1),
    "lets_sync_clip": (dict(sam_sync_perturbation=True, lets_interval=1, lets_clip=0.1), 1),
    "lets_sync_trace": (dict(sam_sync_perturbation=True, lets_interval=2, lets_horizon="trace"), 1),
    "looksam_sync": (dict(sam_every=2, sam_reuse="looksam", lets_interval=2, lets_horizon="interval"), 1),
    "looksam_per_rank_accum2": (
        dict(sam_sync_perturbation=False, sam_every=2, sam_reuse="looksam", lets_interval=2, lets_horizon="interval"),
        2,
    ),
    "lets_per_rank_interval2_accum2": (dict(sam_sync_perturbation=False, lets_interval=2, lets_horizon="interval"), 2),
}


def train(out_dir, overrides, n_accum, batch, heldout_batch):
    """The shared recipe: tiny float64 BERT, AdamW with clipping, LETS every step with a fast radius."""
    model = tiny_bert(dtype=torch.float64)
    settings = dict(
        output_dir=out_dir,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        max_steps=STEPS,
        learning_rate=1e-2,
        max_grad_norm=0.5,
        seed=0,
        logging_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=n_accum,
        lets_interval=1,  # a case may override it
        lets_lr=0.2,
        lets_batch_size=heldout_batch,
        lets_guard_tolerance=None,
    )
    args = LETSTrainingArguments(**{**settings, **overrides})
    trainer = LETSTrainer(model=model, args=args, train_dataset=token_data(64), lets_dataset=token_data(12, seed=1))
    trainer.train()
    return params_of(model), trainer.rho, [h["hypergradient"] for h in trainer.lets_history]


if __name__ == "__main__":
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    for name, (overrides, n_accum) in DDP_CASES.items():
        params, rho, hyper = train(os.path.join(out, name), overrides, n_accum, B, HELDOUT_B)
        torch.save(
            {"params": params, "rho": rho, "hyper": hyper, "world_size": int(os.environ["WORLD_SIZE"])},
            os.path.join(out, f"{name}_rank{rank}.pt"),
        )
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()  # a clean exit; without it gloo can abort at interpreter shutdown
