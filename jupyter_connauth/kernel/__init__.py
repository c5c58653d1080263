"""Kernel side: the broker client, magics and balloon. Never imports jupyter_server."""
