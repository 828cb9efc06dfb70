"""The transformer feed-forward block shared by the ViT-style models."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class Mlp(nn.Module):
    """Token-wise feed-forward on (..., dim): `fc1` (dim -> hidden), `act`, `fc2` (hidden -> dim).

    The parameter names (`fc1`, `fc2`) are those of timm's, VideoMAE's and Hugging Face's MLPs, so
    their state dicts map key for key. `act_layer` builds the activation (GELU by default).
    """

    def __init__(
        self, dim: int, hidden: int, *, act_layer: Callable[[], nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (..., dim)
