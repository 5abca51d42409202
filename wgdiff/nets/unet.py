"""UNet with self-attention for image score models (Dhariwal & Nichol style, Ghimire sec 9).

Ghimire et al. use "the standard U-net architecture with attention due to
(Dhariwal & Nichol, 2021)" for both the score model and the projection model.
This is a compact Flax linen version of it: residual blocks with GroupNorm and
a time embedding added after the first convolution, self-attention at chosen
resolutions, stride-2 convolutions down and nearest-neighbour upsampling up,
skip connections between matching resolutions.

The defaults are small (0.7 M parameters for 8x8x1 inputs) so that 8x8 digits train on a
CPU in minutes; ``channel_mult=(1, 2, 2, 2)`` with ``base_channels=128`` and
``attention_resolutions=(16,)`` gives the 64x64 configuration of the paper.

Example:
    >>> import jax, jax.numpy as jnp
    >>> net = UNet(base_channels=16, channel_mult=(1, 2))
    >>> x = jnp.zeros((2, 8, 8, 1))
    >>> params = net.init(jax.random.key(0), x, jnp.ones((2,)))
    >>> net.apply(params, x, 0.5).shape
    (2, 8, 8, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wgdiff._types import Array
from wgdiff.nets.embedding import sinusoidal_embedding, time_vector


def _groups(channels: int, max_groups: int) -> int:
    """Largest divisor of ``channels`` not above ``max_groups`` (GroupNorm needs one)."""
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice with a time-embedding shift; 1x1 skip when channels change."""

    channels: int
    groups: int = 8

    @nn.compact
    def __call__(self, x: Array, temb: Array) -> Array:
        h = nn.silu(nn.GroupNorm(num_groups=_groups(x.shape[-1], self.groups))(x))
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(nn.silu(temb))[:, None, None, :]
        h = nn.silu(nn.GroupNorm(num_groups=_groups(self.channels, self.groups))(h))
        # Zero init: every residual block starts as the identity, which keeps deep
        # UNets trainable without warm-up.
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1))(x)
        return x + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, residual."""

    num_heads: int = 1
    groups: int = 8

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, height, width, channels = x.shape
        h = nn.GroupNorm(num_groups=_groups(channels, self.groups))(x)
        h = h.reshape(n, height * width, channels)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, out_kernel_init=nn.initializers.zeros
        )(h, h)
        return x + h.reshape(n, height, width, channels)


class UNet(nn.Module):
    """UNet score (or projection) network for images.

    Attributes:
        base_channels: channels at the finest resolution.
        channel_mult: channel multiplier per resolution level; the input is
            downsampled ``len(channel_mult) - 1`` times, so ``H`` and ``W`` must be
            divisible by ``2 ** (len(channel_mult) - 1)``.
        num_res_blocks: residual blocks per level on the way down (one more on
            the way up, as in Dhariwal & Nichol).
        attention_resolutions: spatial sizes (height) at which self-attention
            follows the residual blocks; the bottleneck always has attention.
        num_heads: attention heads.
        out_channels: output channels; ``None`` means the input's, so the net can
            serve as ``score_fn(x, t) -> like x``.
        groups: maximum GroupNorm groups.

    Call:
        ``x: (n, H, W, C)``, ``t``: scalar or ``(n,)`` -> ``(n, H, W, out_channels)``.
    """

    base_channels: int = 32
    channel_mult: Sequence[int] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: Sequence[int] = (4,)
    num_heads: int = 1
    out_channels: int | None = None
    groups: int = 8

    @nn.compact
    def __call__(self, x: Array, t: float | Array) -> Array:
        if x.ndim != 4:
            raise ValueError(f"x must have shape (n, H, W, C), got shape {x.shape}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"x spatial shape {x.shape[1:3]} must be divisible by {factor} "
                f"(2 ** (len(channel_mult) - 1))"
            )
        t = time_vector(t, x)
        temb_dim = 4 * self.base_channels
        temb = sinusoidal_embedding(t, self.base_channels)
        temb = nn.Dense(temb_dim)(nn.silu(nn.Dense(temb_dim)(temb)))

        h = nn.Conv(self.base_channels, (3, 3))(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.base_channels * mult, self.groups)(h, temb)
                if h.shape[1] in self.attention_resolutions:
                    h = AttentionBlock(self.num_heads, self.groups)(h)
                skips.append(h)
            if level != len(self.channel_mult) - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)
                skips.append(h)

        h = ResBlock(h.shape[-1], self.groups)(h, temb)
        h = AttentionBlock(self.num_heads, self.groups)(h)
        h = ResBlock(h.shape[-1], self.groups)(h, temb)

        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = ResBlock(self.base_channels * mult, self.groups)(h, temb)
                if h.shape[1] in self.attention_resolutions:
                    h = AttentionBlock(self.num_heads, self.groups)(h)
            if level != 0:
                n, height, width, channels = h.shape
                h = jax.image.resize(h, (n, 2 * height, 2 * width, channels), "nearest")
                h = nn.Conv(channels, (3, 3))(h)

        h = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1], self.groups))(h))
        out_channels = x.shape[-1] if self.out_channels is None else self.out_channels
        return nn.Conv(out_channels, (3, 3), kernel_init=nn.initializers.zeros)(h)


__all__ = ["AttentionBlock", "ResBlock", "UNet"]
