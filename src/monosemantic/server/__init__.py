"""serve stage: the feature store and graphs over HTTP (dashboard at `/`, live views at `/live`),
with live activations, steering and tracing run by one worker."""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
