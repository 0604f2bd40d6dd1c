"""What a model trained with lets_hf says about it on the Hub: the model card's section on SAM and the radius."""

from __future__ import annotations

from typing import Any

__all__ = ["radius_card", "radius_summary"]


def radius_summary(start: float, history: list[dict[str, Any]], final_rho: float) -> dict[str, float]:
    """``start``, ``end``, ``min``, ``max`` of the radius over a run and its ``hyper_steps``.

    Args:
        start: the starting radius.
        history: `LETSTrainer.lets_history` (empty for a fixed radius: start = end = min = max).
        final_rho: the radius at the end (`LETSTrainer.rho`).
    """
    rhos = [start, *(float(h["rho"]) for h in history), final_rho]
    return {"start": start, "end": final_rho, "min": min(rhos), "max": max(rhos), "hyper_steps": len(history)}


def radius_card(args: Any, history: list[dict[str, Any]], final_rho: float) -> str:
    """A markdown section for the model card: the method, its settings and what the radius did.

    With a loss budget (``sam_budget``) the radius is the budget's, ``sam_rho`` its ceiling: the card gives the
    budget (start and end when learned) and the radii the run recorded, and LETS's bounds are sigma's."""
    budget = getattr(args, "sam_budget", None)
    start = args.sam_rho if budget is None else float(history[0]["rho"]) if history else final_rho
    s = radius_summary(start, history, final_rho)
    learned = "the radius learned by LETS" if budget is None else "a loss budget learned by LETS"
    method = f"{args.sam_variant.upper()} with {learned}" if args.lets else args.sam_variant.upper()
    lines = [
        "",
        "## Sharpness-aware training (lets_hf)",
        "",
        f"Trained with {method}, using the `lets_hf` extension of the Hugging Face `Trainer`.",
        "",
        "| | |",
        "|---|---|",
        f"| variant | `{args.sam_variant}` |",
    ]
    if budget is None:
        lines.append(f"| starting radius (`sam_rho`) | {s['start']:.4g} |")
    else:
        end = f" -> {history[-1]['sigma']:.4g}" if args.lets and history else ""
        lines.append(
            f"| loss budget (`sam_budget`) | {budget:.4g}{end}, radius at most `sam_rho` = {args.sam_rho:.4g} |"
        )
    if args.lets:
        low, high = args.rho_bounds
        bounds = "bounds" if budget is None else "sigma's bounds"
        lines += [
            f"| final radius | {s['end']:.4g} |",
            f"| range over training | {s['min']:.4g} to {s['max']:.4g} ({bounds} {low:.4g} to {high:.4g}) |",
            f"| hyper-steps | {s['hyper_steps']} (every {args.lets_interval} steps, "
            f"objective `{args.lets_objective}`) |",
        ]
    if args.sam_every > 1:
        lines.append(f"| perturbed steps | one in {args.sam_every} (`sam_reuse={args.sam_reuse}`) |")
    return "\n".join(lines) + "\n"
