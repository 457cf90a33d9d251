"""[notifications] settings and routing: kinds x books, one row per recipient."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.notify.notifier import EMAIL, WEBHOOK, route_targets
from gateway.notify.settings import NotificationSettings

SMTP = {"host": "smtp.example.com", "from_address": "fixalloc@example.com"}


def _settings(*routes: dict[str, object], **extra: object) -> NotificationSettings:
    return NotificationSettings.model_validate(
        {"webhook_secret_env": "HOOK_SECRET", "smtp": SMTP, "routes": list(routes), **extra})


ROUTES = _settings(
    {"kinds": "*", "email_to": ["ops@example.com"]},                          # 0: everything
    {"kinds": ["exception_opened", "sweep_report"], "email_to": ["compliance@example.com"]},
    {"kinds": ["allocation_sent", "approval_pending"], "books": ["SMA-CORE"],
     "webhook_url": "https://pm.example.com/hook", "email_to": ["pm-core@example.com"]},
    {"kinds": ["approval_pending"], "books": ["SMA-CORE", "SMA-GROWTH"],
     "email_to": ["pm-core@example.com", "cio@example.com"]},                 # 3: pm-core again
)


@pytest.mark.parametrize(("kind", "book", "expected"), [
    ("allocation_sent", "SMA-CORE", [(0, EMAIL, "ops@example.com"),
                                     (2, WEBHOOK, "https://pm.example.com/hook"),
                                     (2, EMAIL, "pm-core@example.com")]),
    ("allocation_sent", "SMA-GROWTH", [(0, EMAIL, "ops@example.com")]),
    ("exception_opened", "SMA-CORE", [(0, EMAIL, "ops@example.com"),
                                      (1, EMAIL, "compliance@example.com")]),
    ("sweep_report", None, [(0, EMAIL, "ops@example.com"),
                            (1, EMAIL, "compliance@example.com")]),
    # pm-core is named by routes 2 and 3: one e-mail, under the first route.
    ("approval_pending", "SMA-CORE", [(0, EMAIL, "ops@example.com"),
                                      (2, WEBHOOK, "https://pm.example.com/hook"),
                                      (2, EMAIL, "pm-core@example.com"),
                                      (3, EMAIL, "cio@example.com")]),
    ("approval_pending", "SMA-GROWTH", [(0, EMAIL, "ops@example.com"),
                                        (3, EMAIL, "pm-core@example.com"),
                                        (3, EMAIL, "cio@example.com")]),
    # A notification about no book reaches only routes without a books list.
    ("approval_pending", None, [(0, EMAIL, "ops@example.com")]),
])
def test_routes_by_kind_and_book(kind: str, book: str | None,
                                 expected: list[tuple[int, str, str]]) -> None:
    assert route_targets(ROUTES, kind, book) == expected


def test_no_route_no_target() -> None:
    settings = _settings({"kinds": ["sweep_report"], "email_to": ["ops@example.com"]})
    assert route_targets(settings, "allocation_sent", "SMA-CORE") == []


@pytest.mark.parametrize(("settings", "message"), [
    ({"routes": [{"kinds": "*"}]}, "needs a webhook_url, email_to, or both"),
    ({"routes": [{"kinds": ["allocation_made"], "email_to": ["a@b.co"]}], "smtp": SMTP},
     "allocation_sent"),
    ({"routes": [{"kinds": [], "email_to": ["a@b.co"]}], "smtp": SMTP}, "kinds is empty"),
    ({"routes": [{"webhook_url": "https://x.example/h"}]}, "no secret"),
    ({"routes": [{"email_to": ["a@b.co"]}]}, "[notifications.smtp] is not set"),
    ({"routes": [{"email_to": ["not an address"]}], "smtp": SMTP}, "not an e-mail address"),
    ({"routes": [{"webhook_url": "ftp://x.example/h"}], "webhook_secret_env": "S"},
     "http(s) URL"),
    ({"webhook_secret_env": "the secret itself!"}, "should match pattern"),
    ({"smtp": {**SMTP, "username": "u"}}, "username and password_env go together"),
    ({"smtp": {**SMTP, "username": "u", "password_env": "P", "starttls": False}},
     "password in clear"),
    ({"retry": {"first_backoff_seconds": 10, "max_backoff_seconds": 1}},
     "max_backoff_seconds is below"),
    ({"claim_seconds": 5}, "claim_seconds"),
    ({"webhook_secret": "s3cret"}, "Extra inputs are not permitted"),
])
def test_bad_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        NotificationSettings.model_validate(settings)
    assert message in str(err.value)


def test_defaults_and_frozen() -> None:
    settings = NotificationSettings()
    assert settings.enabled and settings.routes == ()
    assert settings.retry.max_attempts == 8
    smtp = _settings().smtp
    assert smtp is not None and smtp.starttls is True and smtp.port == 587
    with pytest.raises(ValidationError):
        settings.enabled = False


def test_strings_from_the_environment_are_coerced() -> None:
    """FIXALLOC__NOTIFICATIONS__RETRY__MAX_ATTEMPTS=3 arrives as a string."""
    settings = NotificationSettings.model_validate(
        {"retry": {"max_attempts": "3", "first_backoff_seconds": "0.5"}, "enabled": "false"})
    assert settings.retry.max_attempts == 3 and settings.retry.first_backoff_seconds == 0.5
    assert settings.enabled is False


def test_the_documented_example_is_valid() -> None:
    """The [notifications] example in settings.py's docstring loads as written."""
    import re
    import tomllib

    from gateway.notify import settings as module

    block = re.search(r"```toml\n(.*?)```", module.__doc__ or "", re.S)
    assert block is not None
    example = NotificationSettings.model_validate(tomllib.loads(block.group(1))["notifications"])
    assert [r.kinds for r in example.routes] == [("exception_opened", "sweep_report"), "*"]
    assert route_targets(example, "allocation_sent", "SMA-CORE") == [
        (1, WEBHOOK, "https://pm.example.com/hooks/fixalloc")]


def test_check_settings_names_a_missing_secret_or_ca_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.errors import SecretMissingError
    from gateway.notify.notifier import check_settings

    settings = _settings({"kinds": "*", "webhook_url": "https://pm.example.com/hook"})
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    with pytest.raises(SecretMissingError, match="HOOK_SECRET"):
        check_settings(settings)
    secrets = tmp_path / "secrets.env"
    secrets.write_text("HOOK_SECRET=from-the-file\n", encoding="utf-8")
    check_settings(settings, secrets_file=secrets)
    monkeypatch.setenv("HOOK_SECRET", "x")
    check_settings(settings)
    missing_ca = settings.model_copy(update={"webhook_ca_file": Path("nope.pem")})
    with pytest.raises(ValueError, match="CA file does not load"):
        check_settings(missing_ca, resolve=lambda p: tmp_path / p)
