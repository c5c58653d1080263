"""The offline demo stack (``bash scripts/demo``): not part of the installed package."""
