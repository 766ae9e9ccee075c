"""RandAugment's pixel ops as batched tensor ops on uint8 clips, on any device.

Legend: G clips, N frames per clip, H x W pixels. Every op takes `x` uint8 (G, N, 3, H, W) and
one argument per clip (G,), and applies the same change to every frame of a clip, as PIL does
to each frame when timm's ops are replayed per frame. The arithmetic follows Pillow's C code so
that the results are the same numbers, not a look-alike:

- blends (Color, Contrast, Brightness, Sharpness) are Pillow's `ImagingBlend`: float32
  `degenerate + factor * (image - degenerate)`, clipped, truncated;
- RGB -> L is Pillow's fixed-point `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`;
- Sharpness's SMOOTH filter rounds (2S + 13) // 26 exactly (S the 3x3 sum with centre weight
  5) and leaves the one-pixel border as it is, like Pillow's 3x3 filter;
- AutoContrast and Equalize build Pillow's look-up tables (double and integer arithmetic);
- geometric ops are Pillow's affine transform with its bicubic filter (a = -1 cubic, pixel
  centres at +0.5, edge pixels repeated, points outside the image get the fill colour, results
  truncated). Shears and translations move whole rows or columns: one gather and a 4-tap
  filter; rotations are one sparse (pixels x pixels) matrix per clip applied to all its frames
  at once. Both sum in float32; the few pixels whose sum lies next to an integer, where
  Pillow's double arithmetic could truncate to the other side, are recomputed as Pillow does.

The results equal Pillow 13's bit for bit (tests/test_data_rand_augment.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch

from tdsclip.data.rand_augment import Kernel

_LUMA = (19595, 38470, 7471)  # Pillow's L24 weights (x 2**16)


def _per_clip(values: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(G,) values -> (G, 1, 1, 1, 1) on x's device, broadcasting over frames and pixels."""
    return values.to(device=x.device, dtype=dtype).view(-1, 1, 1, 1, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L of uint8 (..., 3, H, W): int32 (..., 1, H, W)."""
    out = torch.full_like(x[..., :1, :, :], 0x8000, dtype=torch.int32)
    for c, weight in enumerate(_LUMA):
        out.add_(x[..., c : c + 1, :, :].to(torch.int32), alpha=weight)
    return out.bitwise_right_shift_(16)


def blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend(degenerate, x, factor) for uint8 images, factor per clip (G,).

    x: uint8, or its float32 copy (then overwritten); degenerate: integer-valued float32."""
    out = x.to(torch.float32)
    out.sub_(degenerate)  # integer-valued: exact in float32
    out.mul_(_per_clip(factor, x, torch.float32))  # float32 product, as Pillow's C float alpha
    out.add_(degenerate)
    return out.clamp_(0, 255).to(torch.uint8)  # .to truncates, as Pillow's (UINT8) cast


def invert(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    return torch.bitwise_not(x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the `bits` high bits; 8 or more keeps the image."""
    masks = [(~((1 << (8 - int(b))) - 1)) & 0xFF if b < 8 else 0xFF for b in bits.tolist()]
    return x & _per_clip(torch.tensor(masks), x, torch.uint8)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the pixels >= threshold (0..256; 256 changes nothing)."""
    t = threshold.to(torch.int64)
    flip = (x >= _per_clip(t.clamp(0, 255), x, torch.uint8)).to(torch.uint8)
    # XOR with 255 inverts; threshold 256 flips nothing. Bitwise, not torch.where: where() on
    # uint8 is several times slower on the CPU.
    return x ^ flip.mul_(_per_clip((t <= 255) * 255, x, torch.uint8))


def solarize_add(x: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Add `add` (0..128) to the pixels below 128; the sum stays <= 255, no clipping needed."""
    below = (x < 128).to(torch.uint8)
    return x + below.mul_(_per_clip(add.to(torch.int64), x, torch.uint8))


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(luma(x).to(torch.float32), x, factor)  # degenerate: the L image as RGB


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    l_sum = luma(x).sum(dim=(-3, -2, -1), keepdim=True, dtype=torch.int64)
    pixels = torch.tensor(x.shape[-2] * x.shape[-1], dtype=torch.float64, device=x.device)
    mean = (l_sum.double() / pixels + 0.5).floor()  # Pillow: int(sum / pixels + 0.5)
    return blend(mean.to(torch.float32), x, factor)  # degenerate: grey at the mean L


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(torch.zeros((), device=x.device), x, factor)  # degenerate: black


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    image = x.to(torch.float32)  # integer sums below 2**24 stay exact in float32
    rows = image[..., :, :-2] + image[..., :, 1:-1]
    rows += image[..., :, 2:]  # (G, N, 3, H, W-2)
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]  # (G, N, 3, H-2, W-2)
    box.add_(image[..., 1:-1, 1:-1], alpha=4)  # centre weight 5: S <= 13 * 255
    # Pillow sums float32 kernel taps (1/13, 5/13) plus 0.5 and truncates; S/13 + 0.5 is never
    # within 1/26 of an integer, so that is exactly floor((2S + 13) / 26).
    smooth = image.clone()  # the one-pixel border stays as it is
    smooth[..., 1:-1, 1:-1] = box.mul_(2).add_(13).div_(26).floor_()
    return blend(smooth, image, factor)


def _channel_index(x: torch.Tensor) -> torch.Tensor:
    """int32 (K, H*W), K = G*N*3: each pixel's value plus 256 x its (clip, frame, channel)."""
    k = x.shape[0] * x.shape[1] * x.shape[2]
    index = x.reshape(k, -1).to(torch.int32)  # (K, H*W)
    return index.add_(torch.arange(0, k * 256, 256, device=x.device, dtype=torch.int32)[:, None])


def _apply_tables(x: torch.Tensor, index: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Look up every pixel in its channel's table: tables (K, 256) of values 0..255."""
    flat = tables.to(torch.uint8).view(-1)  # (K*256,): row k at k*256
    return flat.index_select(0, index.view(-1)).view(x.shape)  # int32 indices: no int64 copy


def auto_contrast(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """Stretch every channel of every frame to [0, 255] with Pillow's look-up table."""
    flat = x.flatten(-2)  # (G, N, 3, H*W)
    lo = flat.amin(-1).reshape(-1, 1).double()  # (K, 1)
    hi = flat.amax(-1).reshape(-1, 1).double()  # (K, 1)
    stretch = hi > lo
    # A tensor / tensor division: `255.0 / t` is t.reciprocal() * 255, not Python's quotient.
    scale = torch.full_like(hi, 255.0).div_(torch.where(stretch, hi - lo, 1.0))
    scale = torch.where(stretch, scale, 1.0)
    offset = torch.where(stretch, -lo * scale, 0.0)
    levels = torch.arange(256, device=x.device, dtype=torch.float64)
    tables = (levels * scale + offset).trunc_().clamp_(0, 255)  # Pillow: int(ix*scale + offset)
    return _apply_tables(x, _channel_index(x), tables)


def equalize(x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """Histogram-equalise every channel of every frame with Pillow's look-up table."""
    k = x.shape[0] * x.shape[1] * x.shape[2]
    index = _channel_index(x)  # (K, H*W)
    hist = torch.bincount(index.view(-1), minlength=k * 256).view(k, 256)  # (K, 256)
    present = hist > 0
    last = 255 - present.flip(1).to(torch.uint8).argmax(1)  # highest value present
    # Pillow 13: step = (pixels - count of the highest value) // 255; lut[i] = (step // 2 +
    # pixels below i) // step; a single value or step 0 keeps the channel.
    step = (hist.sum(1) - hist.gather(1, last[:, None])[:, 0]) // 255  # (K,)
    below = hist.cumsum(1) - hist  # (K, 256)
    tables = (step[:, None] // 2 + below) // step.clamp(min=1)[:, None]
    keep = (present.sum(1) <= 1) | (step == 0)
    identity = torch.arange(256, device=x.device).expand(k, 256)
    tables = torch.where(keep[:, None], identity, tables).clamp_(max=255)
    return _apply_tables(x, index, tables)


def affine_matrix(kernel: int, arg: float, *, height: int, width: int) -> tuple[float, ...]:
    """Pillow's (a, b, c, d, e, f): output pixel centre (x, y) reads input (ax+by+c, dx+ey+f).

    Computed in Python floats with Pillow's formulas, so that the sampling points match it.
    """
    if kernel == Kernel.SHEAR_X:
        return (1.0, arg, 0.0, 0.0, 1.0, 0.0)
    if kernel == Kernel.SHEAR_Y:
        return (1.0, 0.0, 0.0, arg, 1.0, 0.0)
    if kernel == Kernel.TRANSLATE_X:
        return (1.0, 0.0, arg * width, 0.0, 1.0, 0.0)
    if kernel == Kernel.TRANSLATE_Y:
        return (1.0, 0.0, 0.0, 0.0, 1.0, arg * height)
    if kernel != Kernel.ROTATE:
        raise ValueError(f"kernel {kernel} is not geometric")
    angle = -math.radians(arg % 360.0)  # Image.rotate about the centre (w/2, h/2)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = width / 2, height / 2
    a, b, d, e = cos, sin, round(-math.sin(angle), 15), cos
    return (a, b, a * -cx + b * -cy + 0.0 + cx, d, e, d * -cx + e * -cy + 0.0 + cy)


PAD = 2  # replicated border: a 4-tap window around any inside point stays in the padded frame


def _cubic_taps(coord: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's 4-tap a = -1 cubic at input coordinates `coord` (pixel centres at +0.5).

    Returns the padded-frame index of the first tap (..., P) and the 4 weights (..., P, 4).
    Pillow repeats edge pixels for taps past the edge; reading the frame padded by its
    repeated border gives the same values. Points outside the frame (filled, weight 0) are
    clamped so that their taps stay in range.
    """
    pos = coord - 0.5
    base = pos.floor().clamp_(-1, size - 1)  # inside points have base in [-1, size - 1]
    return base.long() - 1 + PAD, _cubic_weights((pos - base).clamp_(0, 1))


def _cubic_weights(d: torch.Tensor) -> torch.Tensor:
    """Weights (..., 4) of taps floor-1 .. floor+2 at fraction d (...,): Pillow's BICUBIC
    macro p1 + d*(p2 + d*(p3 + d*p4)) written per tap (the a = -1 cubic convolution)."""
    d = d[..., None]
    d2, d3 = d * d, d * d * d
    return torch.cat([-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, d3 - d2], -1)


def _sampling_points(
    matrices: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input coordinates (G, P) of every output pixel centre and the (G, P) outside mask."""
    device = matrices.device
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float64) + 0.5,
        torch.arange(width, device=device, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    xs, ys = xs.reshape(1, -1), ys.reshape(1, -1)  # (1, P), row-major pixels
    m = matrices[:, :, None]  # (G, 6, 1)
    x_in = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]  # Pillow's order of operations
    y_in = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    outside = (x_in < 0) | (x_in >= width) | (y_in < 0) | (y_in >= height)
    return x_in, y_in, outside


def _affine_operator(
    matrices: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse (G*P, G*Q) bicubic resampling operator (P = H*W pixels out, Q padded pixels in,
    16 taps each) of any affine map (rotations; shears and translations go through
    `_resample_lines`) and the (G, P) outside mask."""
    g, p = matrices.shape[0], height * width
    row_len, q = width + 2 * PAD, (height + 2 * PAD) * (width + 2 * PAD)
    x_in, y_in, outside = _sampling_points(matrices, height, width)
    taps = torch.arange(4, device=matrices.device)
    x0, wx = _cubic_taps(x_in, width)
    y0, wy = _cubic_taps(y_in, height)
    rows = (y0[..., None] + taps) * row_len  # (G, P, 4)
    cols = (rows[..., :, None] + x0[..., None, None] + taps).flatten(-2)  # (G, P, 16)
    weights = (wy[..., :, None] * wx[..., None, :]).flatten(-2)  # (G, P, 16)
    cols = cols + torch.arange(g, device=cols.device)[:, None, None] * q  # clip g's block
    weights = weights.masked_fill_(outside[..., None], 0.0).to(torch.float32)
    nnz = cols.shape[-1]
    crow = torch.arange(g * p + 1, device=cols.device) * nnz
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        operator = torch.sparse_csr_tensor(
            crow, cols.reshape(-1), weights.reshape(-1), size=(g * p, g * q), check_invariants=False
        )
    return operator, outside


def _padded_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 (G, N, 3, H, W) -> float32 (G, H+4, W+4, N*3): pixel-major, border repeated."""
    g, n, c, h, w = x.shape
    out = torch.empty(g, h + 2 * PAD, w + 2 * PAD, n * c, dtype=torch.float32, device=x.device)
    inner = out[:, PAD : PAD + h, PAD : PAD + w]
    inner.copy_(x.view(g, n * c, h, w).permute(0, 2, 3, 1))  # (G, H, W, N*3)
    out[:, :PAD, PAD : PAD + w] = inner[:, :1]
    out[:, PAD + h :, PAD : PAD + w] = inner[:, -1:]
    out[:, :, :PAD] = out[:, :, PAD : PAD + 1]
    out[:, :, PAD + w :] = out[:, :, PAD + w - 1 : PAD + w]
    return out


def _axis(matrix: tuple[float, ...]) -> str:
    if matrix[3:] == (0.0, 1.0, 0.0):
        return "x"
    if matrix[:3] == (1.0, 0.0, 0.0):
        return "y"
    return "xy"


# float32 sums of the 4 or 16 taps are within ~2e-4 of Pillow's double result (values <= 255,
# weights summing to 1, |weights| to at most 1.5); a pixel whose sum is nearer than this to an
# integer could truncate to the other side and is recomputed exactly.
_NEAR_INTEGER = 1e-3


def _horner(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d):
    """Pillow's BICUBIC macro, in double and in its order of operations."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _exact_points(
    x: torch.Tensor,
    x_in: torch.Tensor,
    y_in: torch.Tensor,
    clip: torch.Tensor,
    channel: torch.Tensor,
    pixel: torch.Tensor,
    axis: str,
) -> torch.Tensor:
    """Pillow's bicubic value, exactly (double, its evaluation order, clipped, truncated), at
    output points (clip, frame-channel, pixel) (K,) each, of x viewed as (G, N*3, H, W)."""
    n, c, h, w = x.shape[1:]
    planes = x.view(-1)  # (G*N*3*H*W,)
    plane = (clip * (n * c) + channel) * (h * w)  # (K,) start of each point's input plane
    xf, yf = x_in[clip, pixel] - 0.5, y_in[clip, pixel] - 0.5  # Pillow: xin -= 0.5
    x0, y0 = xf.floor(), yf.floor()
    dx, dy = xf - x0, yf - y0
    cols = [(x0.long() + k).clamp_(0, w - 1) for k in (-1, 0, 1, 2)]
    rows = [(y0.long() + k).clamp_(0, h - 1) * w + plane for k in (-1, 0, 1, 2)]

    def row(start: torch.Tensor) -> torch.Tensor:  # Pillow's horizontal pass on one input row
        if axis == "y":  # dx == 0: the pass returns the pixel itself
            return planes.take(start + cols[1]).double()
        return _horner(*[planes.take(start + col).double() for col in cols], dx)

    # dy == 0 along x (shears, translations in x): the vertical pass returns row y exactly.
    value = row(rows[1]) if axis == "x" else _horner(*[row(r) for r in rows], dy)
    return value.clamp_(0, 255).trunc_()


def _make_exact(
    out: torch.Tensor, skip: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """Overwrite, in the float32 result `out`, the points near an integer (except `skip`:
    outside points, which get the fill, or exact ones) with `exact(their flat indices)`."""
    near = (out - out.round()).abs_() < _NEAR_INTEGER
    near &= ~skip
    where = near.view(-1).nonzero()[:, 0]
    if len(where):
        out.view(-1).index_put_((where,), exact(where).to(out.dtype))


def _resample_lines(x: torch.Tensor, matrices: torch.Tensor, axis: str, fill: int):
    """Shears and translations: every row (axis "x") or column ("y") of the output reads one
    line of the input, shifted by a constant, so the 4 taps are one gather plus a 4-tap filter.

    Pillow's sampling point of output pixel i on a line is i + t (t the line's offset, from the
    matrix at i = 0): base floor(t), fraction t - floor(t), the same for the whole line.
    """
    g, n, c, h, w = x.shape
    dim, size = (-1, w) if axis == "x" else (-2, h)
    x_in, y_in, outside = _sampling_points(matrices.to(x.device, torch.float64), h, w)
    coord = (x_in if axis == "x" else y_in).view(g, h, w)  # (G, H, W)
    start = coord[:, :, 0] if axis == "x" else coord[:, 0, :]  # (G, lines): line offset + 0.5
    base = (start - 0.5).floor()
    taps = [w.to(torch.float32) for w in _cubic_weights(start - 0.5 - base).unbind(-1)]
    # Index j of a line reads input j + base - 1, clamped to the line: Pillow repeats the edge
    # pixel for taps past it (and outside points, which get the fill, read anything).
    j = torch.arange(size + 3, device=x.device)
    index = (j + base.long()[..., None] - 1).clamp_(0, size - 1)  # (G, lines, S+3)
    if axis == "x":
        index = index[:, None, None].expand(g, n, c, h, w + 3)
        window = x.gather(-1, index)  # (G, N, 3, H, W+3) uint8
        weights = [t[:, None, None, :, None] for t in taps]  # per row
    else:
        index = index.transpose(1, 2)[:, None, None].expand(g, n, c, h + 3, w)
        window = x.gather(-2, index)  # (G, N, 3, H+3, W) uint8
        weights = [t[:, None, None, None, :] for t in taps]  # per column
    tap = [window.narrow(dim, k, size) for k in range(4)]  # tap k of every output pixel
    # Summed relative to tap 1 (the weights add up to 1): a flat window gives tap 1 exactly,
    # as Pillow's p1 + d*(0 + ...) does, so only uneven windows can need the exact step.
    values = window.to(torch.float32)
    centre = values.narrow(dim, 1, size)
    out = (values.narrow(dim, 0, size) - centre).mul_(weights[0])
    for k in (2, 3):
        out.addcmul_(values.narrow(dim, k, size) - centre, weights[k])
    flat = ((tap[0] ^ tap[1]) | (tap[2] ^ tap[1]) | (tap[3] ^ tap[1])) == 0
    outside = outside.view(g, 1, 1, h, w)  # (G, 1, 1, H, W), broadcast over frames

    out += centre  # an integer: the sum is near an integer exactly where out is

    def exact(where: torch.Tensor) -> torch.Tensor:  # flat indices into (G, N*3, H*W)
        plane, pixel = where // (h * w), where % (h * w)
        return _exact_points(x, x_in, y_in, plane // (n * c), plane % (n * c), pixel, axis)

    _make_exact(out, flat | outside, exact)
    # The fill by arithmetic (x*1 + 0 or x*0 + fill): a broadcast masked_fill_ is slower.
    out.mul_(~outside).add_(outside * float(fill))
    return out.clamp_(0, 255).to(torch.uint8)  # truncates, as Pillow's bicubic filter


def affine(x: torch.Tensor, matrices: torch.Tensor, fill: int) -> torch.Tensor:
    """Pillow's bicubic affine transform of every frame, one (a..f) matrix per clip (G, 6)."""
    g, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    if h < 4 or w < 4:
        raise ValueError(f"geometric ops need frames of at least 4x4 pixels, got {h}x{w}")
    out = torch.empty_like(x)
    axes = [_axis(tuple(m)) for m in matrices.tolist()]
    for axis in sorted(set(axes)):  # at most 3 groups: along x, along y, any direction
        group = torch.tensor([i for i, a in enumerate(axes) if a == axis])
        if len(group) == g:  # the usual case on the CPU, one clip at a time
            return _affine_group(x, matrices.to(x.device), axis, fill)
        out[group.to(x.device)] = _affine_group(
            x.index_select(0, group.to(x.device)), matrices[group].to(x.device), axis, fill
        )
    return out


def _affine_group(x: torch.Tensor, matrices: torch.Tensor, axis: str, fill: int):
    """`affine` of clips whose matrices all move points along `axis`."""
    g, n, c, h, w = x.shape
    if axis != "xy":
        return _resample_lines(x, matrices, axis, fill)
    operator, outside = _affine_operator(matrices, h, w)
    pixels = _padded_pixels(x).view(-1, n * c)  # (G*Q, N*3)
    moved = (operator @ pixels).view(g, h * w, n * c)  # (G, P, N*3)
    x_in, y_in, _ = _sampling_points(matrices, h, w)

    def exact(where: torch.Tensor) -> torch.Tensor:  # flat indices into (G, H*W, N*3)
        point, channel = where // (n * c), where % (n * c)
        return _exact_points(x, x_in, y_in, point // (h * w), channel, point % (h * w), axis)

    _make_exact(moved, outside[..., None].expand_as(moved), exact)
    moved += outside[..., None] * float(fill)
    moved = moved.clamp_(0, 255).to(torch.uint8)  # truncates, as Pillow's bicubic filter
    return moved.transpose(1, 2).reshape(g, n, c, h, w)  # (G, P, N*3) -> (G, N, 3, H, W)


COLOUR_OPS = {
    Kernel.AUTO_CONTRAST: auto_contrast,
    Kernel.EQUALIZE: equalize,
    Kernel.INVERT: invert,
    Kernel.POSTERIZE: posterize,
    Kernel.SOLARIZE: solarize,
    Kernel.SOLARIZE_ADD: solarize_add,
    Kernel.COLOR: color,
    Kernel.CONTRAST: contrast,
    Kernel.BRIGHTNESS: brightness,
    Kernel.SHARPNESS: sharpness,
}


def affine_matrices(
    kernels: Sequence[int], args: Sequence[float], *, height: int, width: int
) -> torch.Tensor:
    """float64 (G, 6): the matrix of each clip's geometric op."""
    pairs = zip(kernels, args, strict=True)
    rows = [affine_matrix(k, a, height=height, width=width) for k, a in pairs]
    return torch.tensor(rows, dtype=torch.float64).view(-1, 6)  # (G, 6)
