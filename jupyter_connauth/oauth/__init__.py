"""OAuth and token-exchange clients that need no Jupyter (IdPs, Google STS)."""
