"""Fields: coordinates -> intensity, built from plain JSON configs (see factory.py)."""

from .factory import Field, build_field, resolve_field_config, tcnn_available  # noqa: F401
