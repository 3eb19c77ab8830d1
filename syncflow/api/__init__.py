"""The operator's console: a FastAPI app (sessions API, queue admin, web page) served by
``syncflow serve``. ``create_app(settings)`` builds it."""

from __future__ import annotations

from syncflow.api.app import create_app
from syncflow.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
