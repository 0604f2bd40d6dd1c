from .run_glue import cli

cli()
