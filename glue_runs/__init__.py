"""glue_runs: the `lets-glue` command line, run configs, benchmarks and sweeps on top of lets_hf."""
