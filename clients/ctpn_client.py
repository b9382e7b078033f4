"""Find text lines with CTPN served by Triton: four corners and a score per line, in image pixels.

    python clients/ctpn_client.py IMAGE_OR_FOLDER... [--url HOST:PORT] [--model ctpn_onnxruntime_fp32 | ctpn_split] [--server-side]

Images keep their own sizes (short side scaled to 600, long side at most 1000), one request each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from trtrepo.accuracy.evaluate import find_text
from trtrepo.cli.app import run_app
from trtrepo.clients.options import ApiKeyOption, ImagesArgument, JsonOption, OutOption, Protocol, ProtocolOption, UrlOption, WorkersOption
from trtrepo.models.ctpn import CTPN, TextLine
from trtrepo.serving.access import use_api_key
from trtrepo.serving.client import ask_pipeline, collect_images, is_pipeline
from trtrepo.specs import TEXT

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


def find_text_server_side(images: list[Path], model: str, url: str | None, protocol: str, line_score: float,
                          workers: int = 2) -> list[list[TextLine]]:
    """Encoded bytes to CTPN's pipeline model; Triton resizes, infers and connects the proposals into lines."""
    options = {"line_score": np.array([[line_score]], dtype=np.float32)}
    return [[TextLine(tuple((float(x), float(y)) for x, y in corners), float(score))
             for corners, score in zip(out["lines"][0], out["scores"][0])]
            for _, out in ask_pipeline(images, model, url, protocol, options, TEXT, workers)]


def annotate(image_path: Path, lines: list[TextLine], out_dir: Path) -> Path:
    from PIL import Image, ImageDraw

    with Image.open(image_path) as original:
        image = original.convert("RGB")
    draw = ImageDraw.Draw(image)
    for line in lines:
        draw.polygon([tuple(p) for p in line.corners], outline="#00c000", width=max(2, round(max(image.size) / 400)))
        draw.text((line.corners[0][0], line.corners[0][1] - 12), f"{line.score:.2f}", fill="#00c000")
    out_dir.mkdir(parents=True, exist_ok=True)
    image.save(out_dir / image_path.name)
    return out_dir / image_path.name


@app.command()
def main(
    images: ImagesArgument,
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
    model: Annotated[str, typer.Option(help="A ctpn_<engine>_<precision> variant, or the ctpn_split ensemble; with "
                                            "--server-side the pipeline model.")] = "ctpn_onnxruntime_fp32",
    line_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="Lowest mean proposal score of a reported line.")] = CTPN.line_min_score,
    server_side: Annotated[bool, typer.Option(
        "--server-side", help="Send the encoded images to CTPN's pipeline model (a variant name stands for it): "
                              "the server resizes, infers and connects the text lines. --model ctpn needs no flag.")] = False,
    workers: WorkersOption = 2,
    out: OutOption = None,
    as_json: JsonOption = False,
    api_key: ApiKeyOption = None,
) -> None:
    """Print each image's text lines; optionally write annotated images and JSON."""
    use_api_key(api_key)
    paths = collect_images(images)
    if server_side or is_pipeline(model, url, protocol.value):
        results = find_text_server_side(paths, model, url, protocol.value, line_score, workers)
    else:
        results = find_text(paths, model, url, protocol.value, line_score, workers)
    if out is not None:
        for path, lines in zip(paths, results):
            annotate(path, lines, out)
    if as_json:
        print(json.dumps([{"image": str(p), "lines": [line.as_dict() for line in r]} for p, r in zip(paths, results)], indent=2))
        return
    for path, lines in zip(paths, results):
        print(f"{path}: {len(lines)} text lines")
        for line in lines:
            print(f"  {line.score:.3f}  " + " ".join(f"({x:.0f},{y:.0f})" for x, y in line.corners))


if __name__ == "__main__":
    run_app(app)
