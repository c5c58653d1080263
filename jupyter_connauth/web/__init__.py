"""The broker's web layer, shared by the Jupyter server extension and the JupyterHub
service: one set of handlers (:mod:`.handlers`) and routes (:mod:`.routes`) over a
host's identity strategy (:mod:`.identity`), the JSON mixin (:mod:`.http`) and the
callback page (:mod:`.pages`). Importing this package imports nothing else: the
in-kernel broker uses :mod:`.pages` without tornado."""
