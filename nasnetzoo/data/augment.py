"""The papers' augmentations: per-image transforms for DataLoaders, batched ones for on-device data.

Per image (torchvision pipelines): :class:`Cutout` as in DARTS ``utils.Cutout`` (one square of
side ``length`` zeroed after normalisation, centre uniform over the image, clipped at the border).

Batched (:class:`BatchAugment`): the same random crop with zero padding, horizontal flip and
cutout applied to a whole ``(B, C, H, W)`` batch with tensor ops on the batch's device, so a
dataset held in GPU memory is augmented there without DataLoader workers.  Randomness comes from
the device's global generator (saved and restored by the checkpoints).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


class Cutout:
    """DARTS cutout on a normalised ``(C, H, W)`` tensor."""

    def __init__(self, length: int) -> None:
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.length <= 0:
            return img
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, (1,)))
        cx = int(torch.randint(w, (1,)))
        y1, y2 = max(cy - self.length // 2, 0), min(cy + self.length // 2, h)
        x1, x2 = max(cx - self.length // 2, 0), min(cx + self.length // 2, w)
        img = img.clone()
        img[..., y1:y2, x1:x2] = 0.0
        return img

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset per image."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])          # (B, H)
    cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])          # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]   # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, length: int) -> torch.Tensor:
    """DARTS cutout, one square per image, on a normalised batch."""
    if length <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy - length // 2).clamp(min=0)) & (ys < (cy + length // 2).clamp(max=h))   # (B, H)
    in_x = (xs >= (cx - length // 2).clamp(min=0)) & (xs < (cx + length // 2).clamp(max=w))   # (B, W)
    hole = in_y[:, None, :, None] & in_x[:, None, None, :]
    return x.masked_fill(hole, 0.0)


class BatchAugment:
    """Crop + flip on ``[0, 1]`` images, then normalise, then cutout (DARTS order)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, crop_padding: int = 0,
                 hflip: bool = False, cutout: int = 0) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.cutout = int(cutout)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if train:
            x = random_crop(x, self.crop_padding)
            if self.hflip:
                x = random_hflip(x)
        x = self.normalize(x)
        if train:
            x = cutout(x, self.cutout)
        return x


def describe(crop_padding: int, hflip: bool, cutout_len: int, extra: Optional[str] = None) -> str:
    parts = []
    if crop_padding:
        parts.append(f"random crop (pad {crop_padding})")
    if hflip:
        parts.append("h-flip")
    if extra:
        parts.append(extra)
    if cutout_len:
        parts.append(f"cutout {cutout_len}")
    return " + ".join(parts) or "none"
