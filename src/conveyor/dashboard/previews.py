"""Bounded previews of artifacts for the step and artifact pages: never load a huge artifact, never fail the page.

A preview is text (a builtin's repr cut short, a DataFrame's head, an ndarray's shape/dtype/min/max) or an image as
a data URL; anything else, an artifact over MAX_BYTES, or one that fails to load says why it is not shown."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.client import ArtifactView

__all__ = ["MAX_BYTES", "Preview", "preview"]

#: artifacts larger than this (as stored) are not loaded for a preview
MAX_BYTES = 50 * 1024 * 1024
MAX_TEXT = 2000
_BUILTINS = (str, bytes, int, float, bool, complex, list, tuple, dict, set, frozenset, type(None))


@dataclass(frozen=True)
class Preview:
    kind: str  # text, image, none
    text: str = ""
    image_data_url: str | None = None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def describe(value: Any) -> Preview:
    """A preview of a loaded value."""
    module = type(value).__module__
    if isinstance(value, _BUILTINS):
        return Preview("text", _cut(repr(value)))
    if module.startswith("pandas") and hasattr(value, "head") and hasattr(value, "shape"):
        rows, *cols = value.shape
        return Preview("text", _cut(f"{rows} rows × {cols[0] if cols else 1} columns\n{value.head(10).to_string()}"))
    if module == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
        text = f"ndarray shape={tuple(value.shape)} dtype={value.dtype}"
        if value.size and value.dtype.kind in "iufb":
            text += f" min={value.min()!r} max={value.max()!r}"
        return Preview("text", text)
    if module.startswith("PIL") and hasattr(value, "save"):
        buf = io.BytesIO()
        image = value.copy()
        image.thumbnail((512, 512))
        image.save(buf, format="PNG")
        return Preview("image", f"{value.width}×{value.height} {value.mode}",
                       "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return Preview("none", f"{type(value).__qualname__} (no preview for this type)")


def preview(artifact: "ArtifactView") -> Preview:
    """Load `artifact` for its preview unless it is too big; a load error is shown, not raised."""
    if artifact.size is not None and artifact.size > MAX_BYTES:
        return Preview("none", f"not previewed: {artifact.size / 1024 / 1024:.0f} MB is over "
                               f"{MAX_BYTES // 1024 // 1024} MB")
    try:
        return describe(artifact.load())
    except Exception as err:  # noqa: BLE001 - a page shows why, whatever the materializer raised
        return Preview("none", f"could not load it: {type(err).__name__}: {_cut(str(err))}")
