"""Pixel helpers for ``render_mode="rgb_array"``: blow a small cell grid up into a frame a person can read.

Frames are uint8 arrays of shape ``(H * cell_px, W * cell_px, 3)``; thin dark grid lines separate cells so
that single-cell objects (a ball, an agent) stay visible after upscaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Named RGB colours used by every env, so the same thing looks the same everywhere.
COLORS: dict[str, tuple[int, int, int]] = {
    "background": (20, 20, 20),
    "grid": (50, 50, 50),
    "wall": (110, 110, 110),
    "floor": (200, 200, 200),
    "agent": (230, 60, 60),
    "paddle": (240, 240, 240),
    "ball": (250, 200, 40),
    "ball_hidden": (110, 90, 20),
    "cue_a": (60, 200, 90),
    "cue_b": (70, 120, 240),
    "text": (240, 240, 240),
    "highlight": (230, 60, 60),
}

#: Default pixels per cell: large enough to read, small enough to keep videos light.
CELL_PX = 12


def upscale(cells: np.ndarray, cell_px: int = CELL_PX, grid_lines: bool = True) -> np.ndarray:
    """Turn an ``(H, W, 3)`` uint8 colour-per-cell array into an ``(H*cell_px, W*cell_px, 3)`` uint8 frame."""
    frame = np.repeat(np.repeat(cells, cell_px, axis=0), cell_px, axis=1)
    if grid_lines and cell_px >= 4:
        frame[::cell_px, :] = COLORS["grid"]
        frame[:, ::cell_px] = COLORS["grid"]
    return np.ascontiguousarray(frame, dtype=np.uint8)


def paint(shape: tuple[int, int], background: str = "background") -> np.ndarray:
    """A blank ``(H, W, 3)`` uint8 colour-per-cell canvas filled with a named colour."""
    canvas = np.empty((*shape, 3), dtype=np.uint8)
    canvas[:] = COLORS[background]
    return canvas


def text_strip(symbols: Sequence[str], highlight: int | None = None, cell_px: int = 32) -> np.ndarray:
    """Render one symbol per square cell, left to right; cell ``highlight`` gets a coloured frame.

    Returns a uint8 array of shape ``(cell_px, len(symbols) * cell_px, 3)``.
    """
    width = max(1, len(symbols)) * cell_px
    image = Image.new("RGB", (width, cell_px), COLORS["background"])
    draw = ImageDraw.Draw(image)
    font = _font(int(cell_px * 0.7))
    for i, symbol in enumerate(symbols):
        x0 = i * cell_px
        outline = COLORS["highlight"] if i == highlight else COLORS["grid"]
        draw.rectangle([x0, 0, x0 + cell_px - 1, cell_px - 1], outline=outline, width=2 if i == highlight else 1)
        draw.text((x0 + cell_px / 2, cell_px / 2), symbol, fill=COLORS["text"], font=font, anchor="mm")
    return np.asarray(image, dtype=np.uint8).copy()


_FONTS: dict[int, ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in font: no file on disk needed; cached because loading costs ~1 ms.
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]
