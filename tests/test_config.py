"""Settings resolved from four places: command line over environment over manifest over default."""

from __future__ import annotations

import pytest

from batchgen.config import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    ApiSettings,
    Limits,
    Overrides,
    Secret,
    resolve,
)
from batchgen.errors import UsageError

CLI, ENV, MANIFEST = "https://cli.test/v1", "https://env.test/v1", "https://manifest.test/v1"


@pytest.mark.parametrize(
    ("given", "manifest", "env", "wins"),
    [
        (CLI, MANIFEST, ENV, CLI),  # --base-url beats everything
        (CLI, None, ENV, CLI),
        (None, MANIFEST, ENV, ENV),  # the environment beats the manifest
        (None, MANIFEST, None, MANIFEST),
        (None, None, ENV, ENV),
        (None, None, None, DEFAULT_BASE_URL),
    ],
)
def test_base_url_precedence(given: str | None, manifest: str | None, env: str | None, wins: str) -> None:
    api = ApiSettings(base_url=manifest) if manifest else ApiSettings()
    environ = {"BATCHGEN_API_KEY": "k", **({BASE_URL_ENV: env} if env else {})}
    settings = resolve(api, Limits(), Overrides(base_url=given), environ)
    assert settings.base_url == wins


def test_a_bad_base_url_is_blamed_on_where_it_came_from() -> None:
    environ = {"BATCHGEN_API_KEY": "k", BASE_URL_ENV: "ftp://env.test"}
    # The command line wins, so the environment's bad value is never used nor reported.
    assert resolve(ApiSettings(), Limits(), Overrides(base_url=CLI), environ).base_url == CLI
    with pytest.raises(UsageError, match=f"^{BASE_URL_ENV} must be an http"):
        resolve(ApiSettings(), Limits(), Overrides(), environ)
    with pytest.raises(UsageError, match=r"^--base-url must be an http"):
        resolve(ApiSettings(), Limits(), Overrides(base_url="ftp://cli.test"), {"BATCHGEN_API_KEY": "k"})
    with pytest.raises(UsageError, match=r"^api\.base_url must be an http"):
        resolve(ApiSettings(base_url="ftp://m.test"), Limits(), Overrides(), {"BATCHGEN_API_KEY": "k"})


def test_a_secret_never_shows_its_value() -> None:
    key = Secret("sk-never-show-me")
    shown = [repr(key), str(key), f"{key}", repr([key]), str({"key": key})]
    assert all("sk-never-show-me" not in text for text in shown)
    assert all("********" in text for text in shown)
    assert key.reveal() == "sk-never-show-me"
