"""Oobleck VAE (stable-audio 2.0 autoencoder) with the checkpoint's old-style weight-norm keys.

The convolutions keep ``weight_g`` / ``weight_v`` (the legacy ``torch.nn.utils.weight_norm`` form used
by descript-audio-codec) and recompute the weight with ``torch._weight_norm`` on every call: the same
kernel the original uses, which keeps the decoder bit-exact. ``g * v / ||v||`` written out by hand
rounds differently and drifts by ~3e-5 relative through the decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thinksound.config import VAEConfig


class WNConv1d(nn.Module):
    """Weight-normalised Conv1d: weight = g * v / ||v|| with the norm over (in, k) per output channel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        # Registration order bias, weight_g, weight_v matches the checkpoint's key order.
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        w = torch._weight_norm(self.weight_v, self.weight_g, 0)
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(nn.Module):
    """Weight-normalised ConvTranspose1d. v is (in, out, k), so the norm is per INPUT channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int, padding: int) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_g = nn.Parameter(torch.ones(in_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        w = torch._weight_norm(self.weight_v, self.weight_g, 0)
        return F.conv_transpose1d(x, w, self.bias, self.stride, self.padding)


class SnakeBeta(nn.Module):
    """x + 1/(exp(beta) + 1e-9) * sin(x * exp(alpha))^2, per channel; alpha and beta stored in log scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, L)
        alpha = torch.exp(self.alpha[None, :, None])
        beta = torch.exp(self.beta[None, :, None])
        return x + (1.0 / (beta + 0.000000001)) * torch.sin(x * alpha).pow(2)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, *, dilation: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(channels),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            SnakeBeta(channels),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ResidualUnit(in_channels, dilation=1),
            ResidualUnit(in_channels, dilation=3),
            ResidualUnit(in_channels, dilation=9),
            SnakeBeta(in_channels),
            WNConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(in_channels),
            WNConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
            ResidualUnit(out_channels, dilation=1),
            ResidualUnit(out_channels, dilation=3),
            ResidualUnit(out_channels, dilation=9),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class OobleckEncoder(nn.Module):
    def __init__(self, *, config: VAEConfig) -> None:
        super().__init__()
        ch = config.channels
        mults = (1, *config.c_mults)
        layers: list[nn.Module] = [WNConv1d(config.io_channels, mults[0] * ch, 7, padding=3)]
        for i, stride in enumerate(config.strides):
            layers.append(EncoderBlock(mults[i] * ch, mults[i + 1] * ch, stride=stride))
        layers += [SnakeBeta(mults[-1] * ch), WNConv1d(mults[-1] * ch, 2 * config.latent_dim, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    def __init__(self, *, config: VAEConfig) -> None:
        super().__init__()
        ch = config.channels
        mults = (1, *config.c_mults)
        layers: list[nn.Module] = [WNConv1d(config.latent_dim, mults[-1] * ch, 7, padding=3)]
        for i in range(len(config.strides), 0, -1):
            layers.append(DecoderBlock(mults[i] * ch, mults[i - 1] * ch, stride=config.strides[i - 1]))
        # No bias on the last conv and no tanh, as in the published config.
        layers += [SnakeBeta(mults[0] * ch), WNConv1d(mults[0] * ch, config.io_channels, 7, padding=3, bias=False)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class AudioAutoencoder(nn.Module):
    """Encoder + decoder; the ``vae`` bottleneck has no parameters and lives in ``posterior``."""

    def __init__(self, *, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = OobleckEncoder(config=config)
        self.decoder = OobleckDecoder(config=config)

    @staticmethod
    def posterior(encoded: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 2C, L) encoder output -> (mean, stdev), stdev = softplus(scale) + 1e-4."""
        mean, scale = encoded.chunk(2, dim=1)
        return mean, F.softplus(scale) + 1e-4

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(B, io_channels, L) -> posterior (mean, stdev), each (B, latent_dim, L / ratio).

        The original always samples mean + eps * stdev; callers that want its behaviour draw eps.
        """
        return self.posterior(self.encoder(audio))

    def decode(self, latents: Tensor) -> Tensor:
        """(B, latent_dim, N) -> (B, io_channels, N * ratio)."""
        return self.decoder(latents)
