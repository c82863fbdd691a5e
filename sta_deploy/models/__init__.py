"""Backbones.  Each module defines a config dataclass and an ``nn.Module`` that calls :mod:`sta_deploy.sta`."""
