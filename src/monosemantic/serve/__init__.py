"""serve stage: the feature store and graphs over HTTP, with the dashboard viewer at `/`."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
