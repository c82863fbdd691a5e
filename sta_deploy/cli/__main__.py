"""``python -m sta_deploy.cli ...``: the same as the ``sta-deploy`` command."""

from .app import entry_point

entry_point()
