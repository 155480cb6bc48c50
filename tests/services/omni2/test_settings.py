"""OMNI2's settings keep the database URL secret: it may hold a password."""

from __future__ import annotations

from pydantic import SecretStr

from services.db.engine import Database, redacted_url
from services.omni2.settings import Omni2Settings

URL = "postgresql+asyncpg://omni:s3cret-pw@db.internal:5432/omni2"

SECRET = "k" * 32  # services refuse a shorter one


def test_the_database_url_is_a_secret_in_settings_and_logs() -> None:
    settings = Omni2Settings(OMNI_JWT_SECRET=SECRET, database_url=URL)  # type: ignore[call-arg]
    assert isinstance(settings.database_url, SecretStr)
    assert settings.database_url.get_secret_value() == URL
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings.model_dump())
    assert redacted_url(settings.database_url) == (
        "postgresql+asyncpg://omni:***@db.internal:5432/omni2"
    )
    db = Database(settings.database_url)
    assert "s3cret-pw" not in repr(db.url) and db.dialect == "postgresql"
