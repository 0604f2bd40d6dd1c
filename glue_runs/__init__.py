"""The GLUE command line (`lets-glue`) and the studies behind docs/results.md; needs `pip install lets_hf[glue]`."""

import importlib.util

_MISSING = [m for m in ("datasets", "sklearn", "scipy", "matplotlib", "yaml") if importlib.util.find_spec(m) is None]
if _MISSING:
    raise ImportError(
        f"glue_runs (the lets-glue command) needs {', '.join(_MISSING)}, which the library alone does not install: "
        "pip install 'lets_hf[glue]'"
    )
