"""Generated protobuf modules for the v0.1.2 schema (do not edit; see ``regenerate.py``)."""
