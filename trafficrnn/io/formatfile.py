"""The JSON files trafficrnn writes beside its binaries (a model's config.json, an ensemble's manifest,
an ONNX sidecar, a checkpoint folder's run.json): read back with one check of their format and version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trafficrnn.errors import ModelFileError


def read_format_json(
    file: str | Path,
    *,
    format: str,
    kind: str,
    max_version: int | None,
    fix: str = "the file is corrupt",
) -> dict[str, Any]:
    """The JSON object in ``file``, whose ``format`` is ``format`` and whose ``format_version`` is a
    positive integer of at most ``max_version`` (``None``: the file records no version).

    ``kind`` names the file in messages (``"model"``, ``"ensemble"``); ``fix`` ends the message on
    an unreadable or foreign file.

    Raises
    ------
    ModelFileError
        Not JSON, not an object of that format, or a version missing or newer than this package reads.
    """
    from trafficrnn import __version__

    file = Path(file)
    try:
        doc = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{file} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(doc, dict) or doc.get("format") != format:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ModelFileError(
            f"{file}: format {found!r:.60}, expected {format!r}; not a trafficrnn {kind} file: {fix}"
        )
    if max_version is None:
        return doc
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"{file}: format_version = {version!r:.40}, expected a positive integer; {fix}"
        )
    if version > max_version:
        raise ModelFileError(
            f"{file}: {kind} format {version} is newer than this trafficrnn ({__version__}) reads "
            f"(<= {max_version}); upgrade trafficrnn"
        )
    return doc
