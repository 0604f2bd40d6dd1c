"""`lets_history.csv/png` for any script (`LETSTrainer.save_lets_history`, `lets_hf.plot_history`), as lets-glue
writes them."""

import csv
import sys

import pytest
from toy import tiny_bert, token_data

from lets_hf import LETSTrainer, LETSTrainingArguments, plot_history


def test_a_script_saves_the_radius_history_as_csv_and_png(base_args, tmp_path):
    args = LETSTrainingArguments(**base_args, max_steps=5, lets_interval=1, lets_lr=0.3, per_device_train_batch_size=8)
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(40))
    trainer.train()
    trainer.save_lets_history(str(tmp_path))
    with open(tmp_path / "lets_history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["rho"]) for r in rows] == pytest.approx([h["rho"] for h in trainer.lets_history])
    png = (tmp_path / "lets_history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob("*.tmp"))


def test_plotting_without_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    history = [{"step": 1, "rho": 0.01, "gap": 0.1}]
    with pytest.raises(ImportError, match=r"plot_history needs matplotlib: pip install matplotlib"):
        plot_history(history, str(tmp_path / "h.png"))
