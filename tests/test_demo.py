"""`make demo` must show a result: its task and model learn. The demo config itself (2000 sentences, 2 epochs, the
number the README states) takes minutes; here the same config on 640 sentences for one epoch at a higher lr."""

import json
import os

from glue_runs.run_glue import run

DEMO = os.path.join(os.path.dirname(__file__), "..", "glue_runs", "configs", "demo_minilm_sst2.json")


def test_demo_config_learns_in_a_short_run(glue_dir, tmp_path):
    short = ["--max_train_samples", "640", "--num_train_epochs", "1", "--per_device_train_batch_size", "16"]
    short += ["--learning_rate", "1e-4", "--max_seq_length", "32", "--max_eval_samples", "200"]
    results, trainer = run(
        [DEMO, "--output_dir", str(tmp_path), "--glue_dir", glue_dir, "--do_predict", "false", *short]
    )
    assert trainer.args.sam_variant == "sam" and trainer.args.lets  # the demo shows LETS-SAM
    assert len(trainer.lets_history) >= 3
    # The first 200 SST-2 dev sentences: 101 negative, 99 positive (a constant guess: 0.505); 36 steps reach ~0.74.
    assert results["eval_accuracy"] > 0.65, results
    assert json.loads((tmp_path / "all_results.json").read_text())["eval_accuracy"] == results["eval_accuracy"]
