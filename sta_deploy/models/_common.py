"""What every backbone with STA shares."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..sta import STA_SCOPE


class StaBackbone(nn.Module):
    """Base of the registry's models: ``.config``, ``.name``, ``.schedule``, ``.r1`` and the STA stages."""

    @property
    def r1(self) -> int:
        return self.schedule.r1

    def set_sta_stages(self, stages) -> None:
        """Hold the STA stage modules under ``STA_SCOPE`` (``self.sta_stages``).

        The name is what makes STA's exported nodes findable: the exporter records each node's module
        path, so ``bench --profile`` and the int8 export tell STA's nodes from the blocks' by it.
        Stage modules have no parameters, so the state dict is the same with and without STA.
        """
        self.add_module(STA_SCOPE, nn.ModuleList(stages if self.schedule.enabled else ()))

    def check_input(self, video: Tensor) -> None:
        expected = self.config.input_shape
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ConfigError(
                f"{self.name} expects input of shape (B, {', '.join(map(str, expected))}) = (batch, channels, frames, height, width), "
                f"got {tuple(video.shape)}"
            )

    def init_linear_weights(self) -> None:
        """Random-weight models are used in tests and demos: truncated-normal weights, zero biases,
        which keeps activations in a sane range."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
