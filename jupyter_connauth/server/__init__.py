"""The Jupyter server extension hosting the broker. Never imports IPython."""
