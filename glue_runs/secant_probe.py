"""How much of the secant curvature ``u = (G - g) / rho`` is dropout noise? (docs/algorithm.md, "Dropout")

    python -m glue_runs.secant_probe [--task MRPC] [--batch 32]

The packaged MiniLM-L6 in training mode, the first ``--batch`` training pairs of the task: ``g`` at ``theta``, ``d =
g / ||g||``, then ``G`` at ``theta + rho d`` for a few radii, once with ``g``'s dropout masks (the random state
rewound, ``sam_same_dropout=True``) and once with fresh ones (what two SAM passes draw by default). Prints ``||u||``
for both and their cosine: with shared masks ``u`` is the curvature ``H d``, the same size at every radius; with
fresh masks it is dominated by the difference of two dropout draws divided by rho. Needs GLUE_DIR; offline.
"""

from __future__ import annotations

import argparse
import os

import torch

from .data import load_glue_dir
from .run_glue import resolve_model_path
from .tasks import get_task


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="MRPC")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.1, 0.01, 0.002, 0.0005])
    opts = parser.parse_args(argv)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    task = get_task(opts.task)
    path = resolve_model_path("packaged:minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels).train()
    train = load_glue_dir(task, os.environ["GLUE_DIR"], with_test=False)["train"].select(range(opts.batch))
    texts = [list(train[column]) for column in task.text_columns]
    batch = dict(tokenizer(*texts, padding=True, truncation=True, max_length=128, return_tensors="pt"))
    batch["labels"] = torch.tensor(list(train["label"]), dtype=torch.float if task.is_regression else torch.long)
    params = [p for p in model.parameters() if p.requires_grad]

    def grad(state: torch.Tensor | None) -> torch.Tensor:
        if state is not None:
            torch.set_rng_state(state)
        model.zero_grad()
        model(**batch).loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    torch.manual_seed(0)
    state = torch.get_rng_state()
    g = grad(state).clone()
    d, theta = g / g.norm(), torch.nn.utils.parameters_to_vector(params).detach().clone()
    spread = float((g - grad(None)).norm() / g.norm())
    print(f"{opts.task}, batch {opts.batch}: ||g(masks 1) - g(masks 2)|| / ||g|| = {spread:.2f}")
    print("| rho | ||u||, same masks | ||u||, fresh masks | cos(u same, u fresh) |\n|---|---|---|---|")
    rows_out = []
    for rho in opts.radii:
        torch.nn.utils.vector_to_parameters(theta + rho * d, params)
        same, fresh = (grad(state) - g) / rho, (grad(None) - g) / rho
        cos = float(torch.nn.functional.cosine_similarity(same, fresh, dim=0))
        rows_out.append({"rho": rho, "same": float(same.norm()), "fresh": float(fresh.norm()), "cos": cos})
        print(f"| {rho:g} | {float(same.norm()):.3g} | {float(fresh.norm()):.3g} | {cos:+.2f} |")
    torch.nn.utils.vector_to_parameters(theta, params)
    return rows_out


if __name__ == "__main__":
    main()
