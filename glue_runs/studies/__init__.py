"""The studies behind docs/results.md, apart from the lets-glue command: resumable quality sweeps (`sweep`, configs in
`studies/configs/`), the side-by-side speed and memory benchmark (`bench_speed`), and the hypergradient's sign
statistics over recorded runs (`hypergradient_stats`). Each runs as `python -m glue_runs.studies.<name>`."""
