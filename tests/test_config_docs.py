"""docs/config.md is what ``python -m jupyter_connauth.configdoc`` writes from the code now:
a new setting, a changed help text or a new environment variable without regenerated
docs fails here."""

from __future__ import annotations

from pathlib import Path

from traitlets import Int, Unicode, default

from jupyter_connauth import configdoc
from jupyter_connauth.broker.config import ConnAuth

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_docs_config_md_is_up_to_date() -> None:
    assert DOC.is_file(), "docs/config.md is missing: run python -m jupyter_connauth.configdoc"
    assert DOC.read_text() == configdoc.render(), (
        "docs/config.md is stale: run python -m jupyter_connauth.configdoc"
    )


def test_every_setting_and_variable_is_documented() -> None:
    text = DOC.read_text()
    for module, name, _where in configdoc.CLASSES:
        cls = getattr(__import__(module, fromlist=[name]), name)
        assert f"## {name}" in text
        for setting, trait in cls.class_own_traits(config=True).items():
            assert f"| `{setting}` |" in text, (name, setting)
            assert trait.help, f"{name}.{setting} has no help text"
    assert configdoc.UNDOCUMENTED not in text
    for var in ("JUPYTER_CONNAUTH_CRYPT_KEY", "JUPYTER_CONNAUTH_CLIENT_SECRET", "JUPYTERHUB_USER"):
        assert f"| `{var}` |" in text


def test_a_new_setting_shows_up_with_its_type_default_and_variable() -> None:
    class Extended(ConnAuth):
        """An extended broker."""

        retries = Int(3, help="How often | to retry <anything>.").tag(config=True)
        region = Unicode(help="The region. Default: $EXAMPLE_REGION.").tag(config=True)

        @default("region")
        def _default_region(self) -> str:
            import os

            return os.environ.get("EXAMPLE_REGION", "eu")

    table = "\n".join(configdoc.class_table(Extended, "somewhere."))
    assert "| `retries` | int | `3` |  | How often \\| to retry &lt;anything&gt;. |" in table
    assert "| `region` | str | computed (see help) | `EXAMPLE_REGION` |" in table
    assert "`client_id`" not in table  # only the class's own settings


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(configdoc.render().replace("| `flow_ttl` |", "| `flow_tll` |"))
    assert configdoc.main(["--check", "--output", str(stale)]) == 1
    assert "stale: run python -m jupyter_connauth.configdoc" in capsys.readouterr().out
    assert configdoc.main(["--output", str(stale)]) == 0
    assert configdoc.main(["--check", "--output", str(stale)]) == 0
