"""Text-line ground truth in ICDAR's forms, paired with the images it describes."""

from __future__ import annotations

from pathlib import Path

from trtrepo.errors import UserError
from trtrepo.specs import IMAGE_SUFFIXES


def read_icdar(path: Path) -> list[tuple[float, float, float, float]]:
    """ICDAR-style ground truth, one text line per row: x1,y1,x2,y2,x3,y3,x4,y4[,transcription] (2015) or
    x1 y1 x2 y2 ["transcription"] (2013); returns each line's bounding rectangle. Rows transcribed ###
    ("do not care") are skipped."""
    boxes = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        # At most 8 coordinates, then the transcription, which may hold commas, spaces and numbers itself.
        parts = [p.strip() for p in (raw.split(",", 8) if "," in raw else raw.split(None, 8))]
        if not any(parts):
            continue
        numbers: list[float] = []
        for part in parts[:8]:
            try:
                numbers.append(float(part))
            except ValueError:
                break
        if len(numbers) < 4:
            raise UserError(f"{path}:{number}: expected 4 or 8 coordinates, got {raw!r}")
        coordinates = numbers[:8] if len(numbers) >= 8 else numbers[:4]
        if parts[len(coordinates):][:1] == ["###"]:
            continue
        xs, ys = coordinates[0::2], coordinates[1::2]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return boxes


def text_ground_truth(data: Path, gt_dir: Path) -> list[tuple[Path, list]]:
    """Images of ``data`` paired with gt_<stem>.txt (or <stem>.txt) from ``gt_dir``."""
    pairs = []
    for image in sorted(p for p in Path(data).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        candidates = [Path(gt_dir) / f"gt_{image.stem}.txt", Path(gt_dir) / f"{image.stem}.txt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(f"{image}: no ground truth {candidates[0].name} or {candidates[1].name} in {gt_dir}")
        pairs.append((image, read_icdar(found)))
    if not pairs:
        raise UserError(f"{data}: no images")
    return pairs
