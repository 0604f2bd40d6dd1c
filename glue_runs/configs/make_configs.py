"""Regenerate the shipped run configs: `python glue_runs/configs/make_configs.py`.

Where the settings come from:
- lr 2e-5, batch 32, 3 epochs, max length 128: the BERT paper's GLUE fine-tuning grid (Devlin et al. 2019, sec. 4.1,
  lr in {5e-5, 4e-5, 3e-5, 2e-5}, batch 32, 3 epochs) and transformers' text-classification example, which
  uses exactly these values.
- RoBERTa: the same, plus 6% linear warm-up and weight decay 0.1 (Liu et al. 2019, Table 10).
- SAM radius 0.01, the library's default start: within the range of published SAM+AdamW fine-tuning radii (1e-4 to
  1e-2), where Foret et al.'s 0.05 (a CIFAR/SGD value) was harmful in our few-thousand-example runs
  (docs/results-log.md); LETS moves it from there.
- LETS: the library's defaults (docs/algorithm.md, "Defaults"), written out so a config shows every choice; lets_lr
  is left to follow the run's length (ln(lets_travel) / hyper-steps).
"""

import json
import os

TASKS = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]
MODELS = {
    "bert-base": {"model_name_or_path": "bert-base-uncased"},
    "roberta-base": {"model_name_or_path": "roberta-base", "warmup_steps": 0.06, "weight_decay": 0.1},
}
COMMON = {
    "data_source": "auto",
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
    "max_seq_length": 128,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "learning_rate": 2e-5,
    "num_train_epochs": 3,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "logging_steps": 50,
    "sam_variant": "sam",
    "sam_rho": 0.01,
    "lets": True,
    "lets_objective": "heldout",
    "lets_interval": 10,
    "lets_horizon": "interval",
    "lets_optimizer": "signum",
    "lets_clip": 3.0,
    "lets_travel": 10000.0,
    "lets_heldout_fraction": 0.1,
    "seed": 42,
}

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for model, settings in MODELS.items():
        for task in TASKS:
            name = f"{model}_{task.lower().replace('-', '')}"
            config = {**settings, "task_name": task, "output_dir": f"runs/{name}", **COMMON}
            with open(os.path.join(here, f"{name}.json"), "w") as f:
                json.dump(config, f, indent=2)
                f.write("\n")
