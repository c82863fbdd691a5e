"""What every backbone with STA shares."""

from __future__ import annotations

from torch import nn


class StaBackbone(nn.Module):
    """Base of the registry's models: ``.config``, ``.name``, ``.schedule`` and ``.r1``."""

    @property
    def r1(self) -> int:
        return self.schedule.r1

    def init_linear_weights(self) -> None:
        """Random-weight models are used in tests and demos: truncated-normal weights, zero biases,
        which keeps activations in a sane range."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
