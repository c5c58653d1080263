"""The JupyterHub service: one broker for every hub user (``python -m jupyter_connauth.hub``).

Server side only: never imports IPython. See docs/jupyterhub.md.
"""
