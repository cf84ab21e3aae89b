"""The aggregator's HTTP layer (``edgekm.sync.server`` is this package)."""

from .app import ADMIN_TOKEN_ENV, MAX_BATCH, MAX_JSON_BYTES, RETRY_AFTER_SECONDS, create_app
from .serving import BackgroundServer, serve

__all__ = ["BackgroundServer", "create_app", "serve", "ADMIN_TOKEN_ENV", "MAX_BATCH",
           "MAX_JSON_BYTES", "RETRY_AFTER_SECONDS"]
