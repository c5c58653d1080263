"""Every setting in one place: ``python -m jupyter_connauth.configdoc`` writes docs/config.md.

The tables come from the traits themselves (type, default, help) and the environment
variables from the code that reads them: a ``@default`` method's ``os.environ.get``
names a setting's variable, and a scan of the package's source finds every other
variable it reads. tests/test_config_docs.py fails when docs/config.md is not what this
module writes now, so a new setting or variable needs ``python -m
jupyter_connauth.configdoc`` (and, for a variable, a line in :data:`ENV_HELP`).

Run it from a development install: it imports the server, hub and kernel sides.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from traitlets import TraitType
from traitlets.traitlets import DefaultHandler

PACKAGE = Path(__file__).resolve().parent
DOC = PACKAGE.parent / "docs" / "config.md"

# (module, class, where it is configured)
CLASSES = [
    (
        "jupyter_connauth.broker.config",
        "ConnAuth",
        "`c.ConnAuth` in `jupyter_server_config.py` (or `.json`); the hub service reads it "
        "from `connauth_hub_config.py`, a kernel without a server from the same "
        "`jupyter_server_config` files.",
    ),
    (
        "jupyter_connauth.server.app",
        "ConnAuthApp",
        "`c.ConnAuthApp` in `jupyter_server_config.py`: the single-user server extension.",
    ),
    (
        "jupyter_connauth.kernel.local",
        "LocalConnAuth",
        "`c.LocalConnAuth` in `jupyter_server_config.py`, read by a kernel that runs the "
        "broker itself (no Jupyter server); it also takes every `ConnAuth` setting.",
    ),
    (
        "jupyter_connauth.hub.app",
        "ConnAuthHub",
        "`c.ConnAuthHub` in `connauth_hub_config.py`: the JupyterHub service "
        "(`python -m jupyter_connauth.hub`).",
    ),
    (
        "jupyter_connauth.kernel.magics",
        "ConnAuthMagics",
        "`%config ConnAuthMagics.NAME = value` in a notebook, or `c.ConnAuthMagics` in "
        "`ipython_config.py`.",
    ),
]

# Environment variables read outside a setting's default: what each one is for.
ENV_HELP = {
    "JUPYTER_CONNAUTH_CRYPT_KEY": "the store's encryption keys (Fernet, `;`-separated, "
    "newest first); else `JUPYTERHUB_CRYPT_KEY`, else a generated key in "
    "`ConnAuth.key_file` (the hub service requires one of the two variables)",
    "JUPYTERHUB_CRYPT_KEY": "JupyterHub's encryption keys, used when "
    "`JUPYTER_CONNAUTH_CRYPT_KEY` is not set",
    "JUPYTER_CONNAUTH_URL": "set by the server for the kernels it starts: the broker API's "
    "URL (a kernel without it runs the broker itself)",
    "JUPYTER_CONNAUTH_TOKEN": "set by the server for the kernels it starts: the kernels' "
    "secret for the broker API",
    "JUPYTERHUB_USER": "set by JupyterHub: whose tokens a single-user server or kernel holds",
    "JPY_SESSION_NAME": "set by jupyter_server for the kernel of a notebook: its path, in the "
    "query tags at the warehouse and for %sql_connector preflight",
    "JUPYTERHUB_API_URL": "set by JupyterHub for its services: the hub's API",
    "JUPYTERHUB_API_TOKEN": "set by JupyterHub: the service's (or user server's) token for "
    "the hub's API",
    "JUPYTERHUB_PUBLIC_URL": "the hub's public URL: the hub service's redirect URI derives "
    "from it when `ConnAuth.public_url` is not set",
}

UNDOCUMENTED = "UNDOCUMENTED"
_TYPES = {"Unicode": "str", "Bool": "bool", "Int": "int", "Float": "float", "Dict": "dict"}


def _type(trait: TraitType[Any, Any]) -> str:
    name = type(trait).__name__
    values = getattr(trait, "values", None)
    if values is not None:  # Enum, CaselessStrEnum
        text = " \\| ".join(f"`{v}`" for v in values)
    elif name in ("List", "Set", "Tuple"):
        inner = getattr(trait, "_trait", None)
        text = f"list of {_type(inner)}" if inner is not None else "list"
    else:
        text = _TYPES.get(name, name)
    return f"{text} or None" if trait.allow_none else text


def _dynamic_default(cls: type, name: str) -> Callable[..., Any] | None:
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, DefaultHandler) and value.trait_name == name:
                func: Callable[..., Any] = value.func
                return func
    return None


def _constants(tree: ast.AST, namespace: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Module-level string (and tuple-of-string) constants: NAME = "VAR"."""
    out: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
            target := (node.targets[0] if isinstance(node, ast.Assign) else node.target),
            ast.Name,
        ):
            try:
                value = ast.literal_eval(node.value) if node.value is not None else None
            except ValueError:
                continue
            if isinstance(value, str):
                out[target.id] = (value,)
            elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                out[target.id] = value
    for key, value in namespace.items():  # imported names (a function's globals)
        if isinstance(value, str) and key.isupper():
            out.setdefault(key, (value,))
    return out


def _env_reads(tree: ast.AST, names: dict[str, tuple[str, ...]]) -> Iterator[str]:
    """Variables read by os.environ.get(X), os.getenv(X), os.environ[X] in ``tree``."""
    loops = dict(names)
    for node in ast.walk(tree):  # for var in KEY_ENV_VARS: os.environ.get(var)
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            it = node.iter
            if isinstance(it, ast.Name) and it.id in names:
                loops[node.target.id] = names[it.id]
    for node in ast.walk(tree):
        arg: ast.expr | None = None
        if isinstance(node, ast.Call) and node.args:
            f = ast.unparse(node.func)
            if f in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) in ("os.environ", "environ"):
                arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value
        elif isinstance(arg, ast.Name) and arg.id in loops:
            yield from loops[arg.id]


def setting_env(cls: type, name: str) -> list[str]:
    """The environment variables a setting's dynamic default reads."""
    func = _dynamic_default(cls, name)
    if func is None:
        return []
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    source = ast.parse(Path(inspect.getfile(func)).read_text())
    return sorted(set(_env_reads(tree, _constants(source, func.__globals__))))


def package_env() -> dict[str, list[str]]:
    """Every environment variable the package's source reads, with the modules reading it."""
    found: dict[str, set[str]] = {}
    files = sorted(PACKAGE.rglob("*.py"))
    trees = {path: ast.parse(path.read_text()) for path in files}
    names: dict[str, tuple[str, ...]] = {}
    for tree in trees.values():
        names.update(_constants(tree, {}))
    for path, tree in trees.items():
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for var in _env_reads(tree, names):
            found.setdefault(var, set()).add(module.removesuffix(".__init__"))
    return {var: sorted(mods) for var, mods in sorted(found.items())}


def _cell(text: str) -> str:
    """One Markdown table cell: one line, pipes and angle brackets escaped."""
    text = " ".join(text.split())
    text = text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\$([A-Z][A-Z0-9_]+)", r"`$\1`", text)


def class_table(cls: Any, where: str) -> list[str]:
    own_doc = inspect.cleandoc(vars(cls).get("__doc__") or "").split("\n\n")[0]
    lines = [f"## {cls.__name__}", "", _cell(f"{own_doc} Set as {where}"), ""]
    aliases = vars(cls).get("aliases")  # its own command line, not its base class's
    if aliases:
        flags = ", ".join(f"`--{k}` ({v})" for k, v in sorted(aliases.items()))
        lines += [f"Command line: {flags}.", ""]
    lines += ["| setting | type | default | environment | help |", "|---|---|---|---|---|"]
    for name, trait in sorted(cls.class_own_traits(config=True).items()):
        env = setting_env(cls, name)
        if _dynamic_default(cls, name) is not None:
            default = "computed (see help)"
        else:
            default = f"`{_cell(trait.default_value_repr())}`"
        lines.append(
            f"| `{name}` | {_type(trait)} | {default} | "
            f"{', '.join(f'`{v}`' for v in env)} | {_cell(trait.help or '')} |"
        )
    return [*lines, ""]


def render() -> str:
    """docs/config.md as the code describes it now."""
    classes = [
        (getattr(importlib.import_module(module), name), where) for module, name, where in CLASSES
    ]
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m jupyter_connauth.configdoc` from the traits' help: "
        "edit the help in the code, then run it. tests/test_config_docs.py checks it. -->",
        "",
        "Every setting of jupyter-connauth, by the class that reads it. A setting whose "
        "default is computed reads the environment variable shown, or what its help says.",
        "",
        "| class | configures |",
        "|---|---|",
    ]
    lines += [f"| [`{c.__name__}`](#{c.__name__.lower()}) | {where} |" for c, where in classes]
    lines.append("")
    defaults: dict[str, list[str]] = {}  # variable -> the settings it defaults
    for cls, where in classes:
        lines += class_table(cls, where)
        for name in sorted(cls.class_own_traits(config=True)):
            for var in setting_env(cls, name):
                defaults.setdefault(var, []).append(f"`{cls.__name__}.{name}`")
    lines += [
        "## Environment variables",
        "",
        "Every variable the package's source reads, and where.",
        "",
        "| variable | read in | meaning |",
        "|---|---|---|",
    ]
    for var, modules in package_env().items():
        meaning = [f"the default of {', '.join(defaults[var])}"] if var in defaults else []
        if var in ENV_HELP or not meaning:
            meaning.append(ENV_HELP.get(var, f"{UNDOCUMENTED}: add it to configdoc.ENV_HELP"))
        mods = ", ".join(f"`{m}`" for m in modules)
        lines.append(f"| `{var}` | {mods} | {_cell('; '.join(meaning))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_connauth.configdoc")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=DOC, help=f"default: {DOC}")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m jupyter_connauth.configdoc")
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
