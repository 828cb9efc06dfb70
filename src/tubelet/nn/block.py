"""The pre-norm transformer block shared by the video ViT and VideoMAE, V-JEPA 2 (its encoder and
its attentive pooler), VideoPrism and the temporal transformer."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from tubelet.nn.attention import Attention
from tubelet.nn.factories import NormFactory
from tubelet.nn.mlp import Mlp


class Block(nn.Module):
    """Pre-norm transformer block on tokens (B, L, D) -> (B, L, D):

        x = x + drop_path(attn(norm1(x), mask, rope))
        x = x + drop_path(mlp(norm2(x)))

    `attn` is `tubelet.nn.attention.Attention` over all L tokens; `forward(x, mask=None,
    rope=None)` passes it a mask (boolean, True = may attend, or an additive bias) and rotary
    tables `(cos, sin)` (`tubelet.nn.rope`). The families differ only in these arguments:

    | argument | what it sets | set by |
    |---|---|---|
    | `mlp_dim` | the MLP's hidden width | each family, from its ratio as its reference rounds it |
    | `norm_layer` | `norm1`, `norm2` | LayerNorm with the family's eps; VideoPrism's offset one |
    | `act_layer` | the MLP's activation | GELU; ReLU in VideoPrism's text tower |
    | `qkv_bias`, `softcap` | attention's bias and score cap | VideoPrism caps scores at 50 |
    | `attn_drop` | dropout of the attention weights | the temporal transformer |
    | `proj_drop` | dropout after `attn.proj` and in the MLP (timm's) | the temporal transformer |
    | `drop_path` | stochastic depth on both branches, per sample | the video ViTs |

    Parameter names (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`) are those of
    timm's ViT block, which the importers map onto.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_dim: int,
        norm_layer: NormFactory = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        qkv_bias: bool = True,
        softcap: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
            softcap=softcap,
        )  # fmt: skip
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, mlp_dim, act_layer=act_layer, drop=proj_drop)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else nn.Identity()

    def forward(
        self, x: Tensor, mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask, rope))
        return x + self.drop_path(self.mlp(self.norm2(x)))
