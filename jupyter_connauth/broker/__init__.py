"""The broker: OAuth flows, refresh and the token store. No IPython, no jupyter_server."""
