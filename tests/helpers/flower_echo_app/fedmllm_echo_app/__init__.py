"""Echo app for the deployment tests (see ../pyproject.toml)."""
