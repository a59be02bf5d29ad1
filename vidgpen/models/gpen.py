"""The GPEN generator (FullGenerator), written for batched inference.

Module and attribute names *are* the official checkpoint keys (``generator.convs.3.conv.modulation.weight``,
``ecd2.0.1.weight``, ...), so any official state_dict loads strictly. The forward pass computes the official
function with a faster formulation:

* **Modulate activations, not weights.** The official code builds a per-sample weight and runs one grouped conv
  over the batch, which cannot use fast shared-weight kernels. Here ``conv(x * s, W) * d`` is used instead of
  ``conv(x, W * s * d)``, with the demodulation ``d = rsqrt((s**2) @ sum_k(W**2) + 1e-8)`` computed from a
  precomputed ``[out, in]`` table. Every conv is an ordinary shared-weight conv over the whole batch. ``s`` is
  divided by its per-sample maximum (and ``d`` multiplied by it) so that ``x * s`` cannot overflow fp16.
  For a single face at high resolution on CPU, where activations dwarf the weights, ``s`` and ``d`` are folded into a
  per-sample weight (one ordinary conv per sample, bias included), which saves two passes over the activations.
* **Channels-last activations and prepared weights.** Equalized-lr scales, the sqrt(2) gain of the fused leaky
  ReLU and the layout are folded into weights once per (device, dtype), not on every call.
* **FIR blurs as depthwise convs.** upfirdn2d (zero insertion, padding, flipped-kernel correlation) equals a
  depthwise ``conv2d`` / strided ``conv_transpose2d`` with the (symmetric) kernel.
* **No concatenation copies.** Each styled conv writes its activation and its encoder "noise" half straight into
  one preallocated buffer, then applies the leaky ReLU to the whole buffer in place.

Inputs and outputs: ``forward(x)`` takes ``[batch, 3, size, size]`` float RGB in [-1, 1] (in [0, 1] for Seg2face)
and returns the raw ``[batch, 3, size, size]`` float32 image, unclamped, exactly like the official model's first
output. The model does no I/O.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidgpen.models.variants import BLUR_KERNEL, N_MLP, STYLE_DIM, GPENArchitecture

SQRT2 = math.sqrt(2.0)
FOLD_MIN_PIXELS = 128 * 128  # output resolution from which per-sample folded weights beat modulating activations
LRELU_SLOPE = 0.2


def fir_kernel(taps=BLUR_KERNEL, gain: float = 1.0) -> torch.Tensor:
    """The official 2-D FIR kernel: outer product of the 1-D taps, normalised to sum 1, times ``gain``. [4, 4]."""
    k1 = torch.tensor(taps, dtype=torch.float32)
    k2 = k1[None, :] * k1[:, None]
    return k2 / k2.sum() * gain


# --------------------------------------------------------------------------------------------------------------
# Parameter containers. Their names and registration order reproduce the official state_dict exactly.
# --------------------------------------------------------------------------------------------------------------


class PixelNorm(nn.Module):
    def forward(self, x):  # [batch, dim]
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate; ``activation`` means the fused leaky ReLU follows."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x):  # [batch, in_dim] -> [batch, out_dim], the official formula
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return F.leaky_relu(out + self.bias * self.lr_mul, LRELU_SLOPE) * SQRT2
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride = stride
        self.padding = padding


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class Blur(nn.Module):
    """FIR low-pass filter (upfirdn2d with up = down = 1) with padding ``pad`` on both sides."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain=gain))
        self.pad = pad


class Upsample(nn.Module):
    """FIR upsampling by 2 (upfirdn2d with up=2, pad (2, 1)); used on the ToRGB skip."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain=4.0))


class ModulatedConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, demodulate=True, upsample=False):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        if upsample:
            self.blur = Blur(pad=(1, 1), gain=4.0)
        self.modulation = EqualLinear(STYLE_DIM, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)


class NoiseInjection(nn.Module):
    """GPEN's "noise" is the encoder feature of the same resolution, scaled and concatenated."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class ConstantInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch * 2)  # concatenation doubles the channels


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, upsample=True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, demodulate=False)


class Generator(nn.Module):
    def __init__(self, arch: GPENArchitecture):
        super().__init__()
        ch = arch.channels
        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(STYLE_DIM, STYLE_DIM, lr_mul=0.01, activation=True) for _ in range(N_MLP)])
        self.input = ConstantInput(ch(4))
        self.conv1 = StyledConv(ch(4), ch(4))
        self.to_rgb1 = ToRGB(ch(4) * 2, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch(4)
        for i in range(3, arch.log_size + 1):
            out_ch = ch(2 ** i)
            self.convs.append(StyledConv(in_ch * 2, out_ch, upsample=True))
            self.convs.append(StyledConv(out_ch * 2, out_ch))
            self.to_rgbs.append(ToRGB(out_ch * 2))
            in_ch = out_ch
        self.n_latent = arch.log_size * 2 - 2


def _conv_layer(in_ch: int, out_ch: int, kernel_size: int, downsample: bool) -> nn.Sequential:
    """The official ConvLayer: [Blur,] EqualConv2d without bias, FusedLeakyReLU (holding the bias)."""
    layers: list[nn.Module] = []
    if downsample:
        layers.append(Blur(pad=(2, 2)))
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride=2, padding=0))
    else:
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2))
    layers.append(FusedLeakyReLU(out_ch))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------------------
# Prepared (folded, re-laid-out) tensors for the fast forward.
# --------------------------------------------------------------------------------------------------------------


class _PreparedConv:
    """A modulated conv ready for ``conv(x * s, W) * d``."""

    def __init__(self, layer: ModulatedConv2d, dtype: torch.dtype, gain: float):
        weight = layer.weight[0].float() * layer.scale                       # [out, in, k, k]
        self.mod_weight = layer.modulation.weight.float() * layer.modulation.scale   # [in, 512]
        self.mod_bias = layer.modulation.bias.float() * layer.modulation.lr_mul      # [in]
        # sum over the kernel taps of W^2: demod d = rsqrt((s^2) @ weight_sq.T + 1e-8), [out, in]
        self.weight_sq = weight.pow(2).sum(dim=(2, 3)) if layer.demodulate else None
        # `gain` (sqrt 2 of the previous activation) multiplies the input: fold it into the conv weight.
        scaled = weight * gain
        self.weight_f32 = scaled                                                # [out, in, k, k] fp32
        self.dtype = dtype
        if layer.upsample:
            self.weight = scaled.transpose(0, 1).contiguous().to(dtype)         # [in, out, k, k] for conv_transpose
        else:
            self.weight = scaled.to(dtype).contiguous(memory_format=torch.channels_last)
        self.upsample = layer.upsample
        if layer.upsample:
            out_ch = layer.out_ch
            self.blur = layer.blur.kernel.flip(0, 1).to(dtype).expand(out_ch, 1, 4, 4).contiguous()

    def styles(self, latent: torch.Tensor) -> torch.Tensor:
        """Per-sample input scales s, [batch, in] float32."""
        return torch.addmm(self.mod_bias, latent, self.mod_weight.t())

    def demod(self, s: torch.Tensor) -> torch.Tensor:
        """Per-sample output scales d, [batch, out] float32."""
        return torch.rsqrt((s * s) @ self.weight_sq.t() + 1e-8)

    def folded(self, x: torch.Tensor, s: torch.Tensor, d: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One sample: conv(x, W * s * d) + bias. x: [1, in, H, W]; s: [in]; d: [out] -> [1, out, H', W']."""
        weight = self.weight_f32 * s[None, :, None, None] * d[:, None, None, None]
        if self.upsample:
            y = F.conv_transpose2d(x, weight.transpose(0, 1).to(self.dtype), stride=2)
            return F.conv2d(y, self.blur, bias, padding=1, groups=self.blur.shape[0])
        weight = weight.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, padding=self.weight.shape[-1] // 2)

    def __call__(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x: [batch, in, H, W] (channels_last) -> the modulated conv output before demodulation."""
        x = x * s.to(x.dtype)[:, :, None, None]
        if self.upsample:
            y = F.conv_transpose2d(x, self.weight, stride=2)
            return F.conv2d(y, self.blur, padding=1, groups=self.blur.shape[0])
        return F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)


class _PreparedStyledConv:
    def __init__(self, layer: StyledConv, dtype: torch.dtype, gain: float):
        self.conv = _PreparedConv(layer.conv, dtype, gain)
        out_ch = layer.conv.out_ch
        bias = layer.activate.bias.float()
        self.bias_conv = bias[:out_ch].to(dtype).view(1, out_ch, 1, 1)
        self.bias_noise = bias[out_ch:].to(dtype).view(1, out_ch, 1, 1)
        self.bias_conv_flat = bias[:out_ch].to(dtype).contiguous()
        self.noise_weight = float(layer.noise.weight.item())
        self.out_ch = out_ch

    def __call__(self, x: torch.Tensor, latent: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """Returns leaky_relu(cat(conv * d + b1, w * feature + b2)) WITHOUT the sqrt(2) gain (folded downstream)."""
        s = self.conv.styles(latent)
        d = self.conv.demod(s)
        # fp16 guard: styles can reach the hundreds, and x * s overflows fp16 (max 65504) where x is large. Scale s
        # per sample to max |s| = 1 and d up by the same factor: the conv is linear, so conv(x * s / m, W) * (d * m)
        # is the same function, and the activation keeps its magnitude (StyleGAN2 pre-normalises for this reason).
        s_max = s.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        s_unit, d_scaled = s / s_max, d * s_max
        batch, _, height, width = feature.shape
        if torch.compiler.is_compiling():
            # torch.compile fuses these itself, and `out=` writes would break its graph
            y = self.conv(x, s_unit)
            conv_half = torch.addcmul(self.bias_conv, y, d_scaled.to(y.dtype)[:, :, None, None])
            noise_half = torch.add(self.bias_noise, feature, alpha=self.noise_weight)
            return F.leaky_relu(torch.cat([conv_half, noise_half], dim=1), LRELU_SLOPE)
        out = torch.empty((batch, 2 * self.out_ch, height, width), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last)
        if batch == 1 and height * width >= FOLD_MIN_PIXELS and x.device.type == "cpu":
            # Large activations, small weights: fold s and d into a per-sample weight (saves two passes over the
            # activations; the bias rides in the conv), one ordinary conv per sample.
            for i in range(batch):
                y = self.conv.folded(x[i:i + 1], s[i], d[i], self.bias_conv_flat)
                out[i:i + 1, : self.out_ch].copy_(y)
        else:
            y = self.conv(x, s_unit)
            torch.addcmul(self.bias_conv, y, d_scaled.to(y.dtype)[:, :, None, None], out=out[:, : self.out_ch])
        torch.add(self.bias_noise, feature, alpha=self.noise_weight, out=out[:, self.out_ch:])
        return F.leaky_relu_(out, LRELU_SLOPE)


class _PreparedToRGB:
    def __init__(self, layer: ToRGB, gain: float):
        conv = layer.conv
        self.weight = conv.weight[0, :, :, 0, 0].float() * conv.scale * gain   # [3, in]
        self.mod_weight = conv.modulation.weight.float() * conv.modulation.scale
        self.mod_bias = conv.modulation.bias.float()
        self.bias = layer.bias.float().view(1, 3, 1, 1)
        if hasattr(layer, "upsample"):
            self.upsample_kernel = layer.upsample.kernel.float().expand(3, 1, 4, 4).contiguous()
        else:
            self.upsample_kernel = None

    def __call__(self, x: torch.Tensor, latent: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """x: [batch, in, H, W] channels_last -> [batch, 3, H, W] float32 (NCHW)."""
        s = torch.addmm(self.mod_bias, latent, self.mod_weight.t())          # [batch, in]
        per_sample = (self.weight[None] * s[:, None, :]).to(x.dtype)         # [batch, 3, in]
        batch, in_ch, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, in_ch)  # a view for channels_last
        rgb = torch.bmm(pixels, per_sample.transpose(1, 2)).float()          # [batch, H*W, 3]
        rgb = rgb.view(batch, height, width, 3).permute(0, 3, 1, 2) + self.bias
        if skip is not None:
            # upfirdn2d(up=2, pad=(2, 1)) == conv_transpose2d(stride 2, padding 1) with the symmetric kernel
            rgb = rgb + F.conv_transpose2d(skip, self.upsample_kernel, stride=2, padding=1, groups=3)
        return rgb


class _Prepared:
    """Everything the fast forward needs, folded for one (device, dtype)."""

    def __init__(self, model: "FullGenerator", dtype: torch.dtype):
        self.dtype = dtype
        self.encoder = []
        for index in range(model.arch.log_size - 1):
            seq = getattr(model, f"ecd{index}")[0]
            conv = seq[1] if index > 0 else seq[0]
            bias = seq[-1].bias.float()
            # fold the fused-lrelu gain: sqrt2 * lrelu(z + b) == lrelu(sqrt2 * z + sqrt2 * b)
            weight = (conv.weight.float() * (conv.scale * SQRT2)).to(dtype).contiguous(
                memory_format=torch.channels_last)
            blur = None
            if index > 0:
                in_ch = conv.weight.shape[1]
                blur = seq[0].kernel.flip(0, 1).to(dtype).expand(in_ch, 1, 4, 4).contiguous()
            self.encoder.append((blur, weight, (bias * SQRT2).to(dtype), conv.stride))
        final = model.final_linear[0]
        self.final_weight = final.weight.float() * final.scale
        self.final_bias = final.bias.float() * final.lr_mul
        self.mapping = [(m.weight.float() * m.scale, m.bias.float() * m.lr_mul) for m in model.generator.style[1:]]
        gen = model.generator
        self.const = gen.input.input.to(dtype)
        self.conv1 = _PreparedStyledConv(gen.conv1, dtype, gain=1.0)
        self.to_rgb1 = _PreparedToRGB(gen.to_rgb1, gain=SQRT2)
        self.convs = [_PreparedStyledConv(layer, dtype, gain=SQRT2) for layer in gen.convs]
        self.to_rgbs = [_PreparedToRGB(layer, gain=SQRT2) for layer in gen.to_rgbs]


class FullGenerator(nn.Module):
    """GPEN: a U-shaped encoder whose features and code drive a StyleGAN2 generator.

    ``forward(x)``: x is ``[batch, 3, size, size]`` float (RGB, [-1, 1]); returns ``[batch, 3, size, size]``
    float32, the official model's raw output (not clamped).
    """

    def __init__(self, arch: GPENArchitecture):
        super().__init__()
        self.arch = arch
        self.size = arch.size
        self.generator = Generator(arch)
        ch = arch.channels
        self.ecd0 = nn.Sequential(_conv_layer(3, ch(arch.size), 1, downsample=False))
        for index in range(1, arch.log_size - 1):
            in_res = 2 ** (arch.log_size - index + 1)
            setattr(self, f"ecd{index}", nn.Sequential(_conv_layer(ch(in_res), ch(in_res // 2), 3, downsample=True)))
        self.final_linear = nn.Sequential(EqualLinear(ch(4) * 4 * 4, STYLE_DIM, activation=True))
        self.compute_dtype = torch.float32
        self._prepared: _Prepared | None = None
        self._prepared_key = None

    # Folded tensors depend on the parameters, their device and the compute dtype: rebuild when any changes.
    def _load_from_state_dict(self, *args, **kwargs):
        self._prepared = None
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self._prepared = None
        return super()._apply(fn, *args, **kwargs)

    def set_compute_dtype(self, dtype: torch.dtype) -> "FullGenerator":
        """Run the convolutions in ``dtype`` (float32, bfloat16 or float16); styles and demodulation stay fp32."""
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported compute dtype {dtype}")
        self.compute_dtype = dtype
        self._prepared = None
        return self

    def prepared(self) -> _Prepared:
        key = (self.compute_dtype, self.generator.input.input.device)
        if self._prepared is None or self._prepared_key != key:
            with torch.no_grad():
                self._prepared = _Prepared(self, self.compute_dtype)
            self._prepared_key = key
        return self._prepared

    def encode(self, x: torch.Tensor, p: _Prepared) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encoder features (high -> low resolution, channels_last) and the mapped latent [batch, 512]."""
        features = []
        h = x
        for blur, weight, bias, stride in p.encoder:
            if blur is not None:
                h = F.conv2d(h, blur, padding=2, groups=blur.shape[0])
            h = F.leaky_relu_(F.conv2d(h, weight, bias, stride=stride), LRELU_SLOPE)
            features.append(h)
        code = h.float().contiguous().reshape(h.shape[0], -1)  # NCHW flatten order, as the official view()
        code = F.leaky_relu(F.linear(code, p.final_weight) + p.final_bias, LRELU_SLOPE) * SQRT2
        latent = code * torch.rsqrt(torch.mean(code * code, dim=1, keepdim=True) + 1e-8)
        for weight, bias in p.mapping:
            latent = F.leaky_relu(F.linear(latent, weight) + bias, LRELU_SLOPE) * SQRT2
        return features, latent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"expected input [batch, 3, {self.size}, {self.size}], got {list(x.shape)}")
        p = self.prepared()
        with torch.no_grad():
            x = x.to(p.dtype).contiguous(memory_format=torch.channels_last)
            features, latent = self.encode(x, p)
            features = features[::-1]  # 4x4 first: features[i] has resolution 4 * 2**i
            batch = x.shape[0]
            h = p.const.expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)
            h = p.conv1(h, latent, features[0])
            skip = p.to_rgb1(h, latent, None)
            for level, to_rgb in enumerate(p.to_rgbs):
                feature = features[level + 1]
                h = p.convs[2 * level](h, latent, feature)
                h = p.convs[2 * level + 1](h, latent, feature)
                skip = to_rgb(h, latent, skip)
            return skip
