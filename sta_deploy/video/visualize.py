"""Which tokens STA kept, drawn like Figure 4 of the paper: the sampled frames in a row per STA stage,
the dropped patches masked out, the kept fraction per stage in the caption.

Geometry (what a kept position means):

* ViT: every stage reports positions ``t * n_s + s`` of the patch-embedding grid: temporal slice
  ``t`` (a tubelet of ``tubelet_size`` frames), patch ``s = row * w + col`` of ``patch_size`` pixels.
* Video Swin: STA stage ``i`` reports positions ``(t * H + h) * W + w`` in the grid of Swin stage
  ``i + 2`` (after ``i + 1`` patch mergings): cells of ``patch * 2**(i + 1)`` pixels (8, 16, 32 px at
  224), slices of ``patch_size[0]`` frames.

Each column is one temporal slice, shown by its first frame; a kept cell shows the frame's pixels
unchanged and a dropped cell is filled with ``mask_color``, so the picture can be checked exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import require

MASK_COLOR = (255, 255, 255)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
OUTLINE = (150, 150, 150)
GAP = 4


@dataclass(frozen=True)
class StageGrid:
    slices: int
    rows: int
    cols: int
    cell: int  # pixels per cell side in the model's input crop
    frames_per_slice: int

    @property
    def tokens(self) -> int:
        return self.slices * self.rows * self.cols


def stage_grids(config) -> list[StageGrid]:
    """The token grid each STA stage's kept positions refer to."""
    if config.family == "vit":
        side = config.img_size // config.patch_size
        grid = StageGrid(config.num_frames // config.tubelet_size, side, side, config.patch_size, config.tubelet_size)
        return [grid, grid, grid]
    if config.family == "swin":
        grids = []
        for stage in range(3):
            t, h, w = config.grids[stage + 1]
            grids.append(StageGrid(t, h, w, config.patch_size[1] * 2 ** (stage + 1), config.patch_size[0]))
        return grids
    raise ValueError(f"no token geometry for model family {config.family!r}")


def kept_mask(positions, grid: StageGrid) -> np.ndarray:
    """(slices, rows, cols) bool, True where a token was kept."""
    mask = np.zeros(grid.tokens, dtype=bool)
    mask[np.asarray(positions, dtype=np.int64).reshape(-1)] = True
    return mask.reshape(grid.slices, grid.rows, grid.cols)


def masked_frame(frame: np.ndarray, kept: np.ndarray, cell: int, mask_color=MASK_COLOR) -> np.ndarray:
    """``frame`` (S, S, 3) with every dropped cell of ``kept`` (rows, cols) filled with ``mask_color``."""
    out = frame.copy()
    size = frame.shape[0]
    for row, col in zip(*np.nonzero(~kept)):
        out[row * cell : min((row + 1) * cell, size), col * cell : min((col + 1) * cell, size)] = mask_color
    return out


def _zoom(image: np.ndarray, zoom: int) -> np.ndarray:
    return image if zoom == 1 else image.repeat(zoom, axis=0).repeat(zoom, axis=1)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@dataclass
class KeptFigure:
    """The rendered picture and where everything is in it (pixel coordinates)."""

    image: object  # PIL.Image
    columns: list  # temporal slice shown in each column
    frame_indices: list  # index (in the decoded clip) of the frame shown in each column
    tile: int  # tile side in pixels (crop size x zoom)
    zoom: int
    rows: list = field(default_factory=list)  # [{"name", "stage" (None for the input), "origin": [(x, y) per column], "cell"}]
    kept_fraction: list = field(default_factory=list)
    kept_tokens: list = field(default_factory=list)
    stage_tokens: list = field(default_factory=list)
    caption: str = ""
    kept: list = field(default_factory=list)  # the drawn view's kept positions per stage (1-D arrays)
    logits: object = None

    def layout(self) -> dict:
        return {"columns": self.columns, "frame_indices": self.frame_indices, "tile": self.tile, "zoom": self.zoom, "rows": self.rows,
                "kept_fraction": self.kept_fraction, "kept_tokens": self.kept_tokens, "stage_tokens": self.stage_tokens}


def choose_columns(slices: int, max_columns: int) -> list[int]:
    if max_columns <= 0 or slices <= max_columns:
        return list(range(slices))
    return sorted({int(round(v)) for v in np.linspace(0, slices - 1, max_columns)})


def render_kept(pixels: np.ndarray, kept, config, *, title: str = "", frame_indices=None, zoom: int = 1, max_columns: int = 8,
                mask_color=MASK_COLOR) -> KeptFigure:
    """Draw one view: ``pixels`` (T, S, S, 3) uint8 as the model saw it, ``kept`` the three stages' positions (1-D each)."""
    pil = require("PIL.Image", "pillow", "drawing the kept-token picture")
    from PIL import ImageDraw

    grids = stage_grids(config)
    size = pixels.shape[1]
    tile = size * zoom
    columns = choose_columns(grids[0].slices, max_columns)
    frames_shown = [c * grids[0].frames_per_slice for c in columns]
    sources = [int(frame_indices[f]) for f in frames_shown] if frame_indices is not None else frames_shown
    masks = [kept_mask(positions, grid) for positions, grid in zip(kept, grids)]
    kept_tokens = [int(np.asarray(p).size) for p in kept]
    stage_tokens = [grid.tokens for grid in grids]
    if config.family == "vit":
        fractions = [k / stage_tokens[0] for k in kept_tokens]  # ViT's drops accumulate over one token set
    else:
        fractions = [k / n for k, n in zip(kept_tokens, stage_tokens)]

    font_size = max(12, min(22, tile // 7))
    font, small = _font(font_size), _font(max(10, font_size - 3))
    label_width = int(font_size * 7.5)
    title_height = font_size + 2 * GAP + 4 if title else GAP
    caption = "kept tokens: " + ", ".join(f"stage {i + 1} {k}/{n if config.family != 'vit' else stage_tokens[0]} ({f:.1%})" for i, (k, n, f) in enumerate(zip(kept_tokens, stage_tokens, fractions)))
    caption_height = 2 * (font_size + GAP) + 2 * GAP
    width = label_width + len(columns) * (tile + GAP) + GAP
    height = title_height + 4 * (tile + GAP) + caption_height
    image = pil.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((GAP * 2, GAP), title, fill=TEXT, font=font)

    rows = []
    names = ["input"] + [f"stage {i + 1}" for i in range(3)]
    for row_index, name in enumerate(names):
        y = title_height + row_index * (tile + GAP)
        stage = None if row_index == 0 else row_index - 1
        origins = []
        for column_index, slice_index in enumerate(columns):
            x = label_width + column_index * (tile + GAP)
            frame = pixels[frames_shown[column_index]]
            if stage is not None:
                frame = masked_frame(frame, masks[stage][slice_index], grids[stage].cell, mask_color)
            image.paste(pil.fromarray(_zoom(frame, zoom)), (x, y))
            draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=OUTLINE)  # in the gap, never on the tile
            origins.append((x, y))
        label_y = y + tile // 2 - font_size
        draw.text((GAP * 2, label_y), name, fill=TEXT, font=font)
        if stage is not None:
            draw.text((GAP * 2, label_y + font_size + 2), f"kept {fractions[stage]:.0%}", fill=(90, 90, 90), font=small)
        rows.append({"name": name, "stage": stage, "origin": origins, "cell": None if stage is None else grids[stage].cell * zoom})
    caption_y = title_height + 4 * (tile + GAP) + GAP
    draw.text((GAP * 2, caption_y), caption, fill=TEXT, font=small)
    draw.text((GAP * 2, caption_y + font_size + GAP), "columns: frames " + " ".join(str(s) for s in sources) + "  (dropped patches masked)", fill=(90, 90, 90), font=small)
    return KeptFigure(image, columns, sources, tile, zoom, rows, fractions, kept_tokens, stage_tokens, caption)


def render_gif(pixels: np.ndarray, kept, config, path, *, zoom: int = 1, duration_ms: int = 250, mask_color=MASK_COLOR) -> Path:
    """An animation over the temporal slices: input and the three stages side by side."""
    pil = require("PIL.Image", "pillow", "writing the GIF")
    from PIL import ImageDraw

    grids = stage_grids(config)
    masks = [kept_mask(positions, grid) for positions, grid in zip(kept, grids)]
    tile = pixels.shape[1] * zoom
    font_size = max(10, min(18, tile // 8))
    font = _font(font_size)
    header = font_size + 2 * GAP
    frames = []
    for slice_index in range(grids[0].slices):
        frame = pixels[slice_index * grids[0].frames_per_slice]
        panels = [frame] + [masked_frame(frame, masks[s][slice_index], grids[s].cell, mask_color) for s in range(3)]
        canvas = pil.new("RGB", (4 * tile + 5 * GAP, tile + header + GAP), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        for index, (panel, name) in enumerate(zip(panels, ["input", "stage 1", "stage 2", "stage 3"])):
            x = GAP + index * (tile + GAP)
            canvas.paste(pil.fromarray(_zoom(panel, zoom)), (x, header))
            draw.rectangle((x - 1, header - 1, x + tile, header + tile), outline=OUTLINE)
            draw.text((x, GAP // 2), name if index == 0 else f"{name} (t={slice_index})", fill=TEXT, font=font)
        frames.append(canvas)
    path = Path(path)
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0, optimize=True)
    return path


def visualize_clip(backend, path, protocol, *, zoom: int = 1, max_columns: int = 8, mask_color=MASK_COLOR, title: str | None = None) -> tuple[KeptFigure, object]:
    """Run one view (the protocol's first; use 1x1 for the centre clip and crop) and draw its kept tokens.

    Returns ``(figure, clip)``: ``clip.pixels[0]`` is the view drawn, ``figure.kept`` its kept positions
    per stage and ``figure.layout()`` where every tile is in ``figure.image``.
    """
    from .clips import load_views

    clip = load_views(path, protocol)
    logits, kept = backend.run(clip.tensors()[:1], with_kept=True)
    kept_one = [np.asarray(stage[0]) for stage in kept]
    if title is None:
        weights = "  (random weights)" if backend.random_weights else ""
        title = f"{backend.model_name}  r1={backend.r1}  {Path(str(path)).name}{weights}"
    figure = render_kept(clip.pixels[0], kept_one, backend.config, title=title, frame_indices=clip.indices[0], zoom=zoom,
                         max_columns=max_columns, mask_color=mask_color)
    figure.kept = kept_one
    figure.logits = logits[0]
    return figure, clip
