"""Detect objects with a YOLOv3 variant (or a declared detector) served by Triton: class, score and box in original-image pixels.

    python clients/yolo_client.py IMAGE_OR_FOLDER... [--url HOST:PORT] [--model NAME] [--out DIR] [--json]

By default the client letterboxes images itself, sends tensors to a <model>_<engine>_<precision> variant and
runs NMS here. With --server-side it sends the encoded image bytes to the repository's pipeline model
(`yolov3_tiny`, `yolov3`), which does all of that inside Triton.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from trtrepo.cli.app import run_app
from trtrepo.clients.options import ApiKeyOption, BatchOption, ImagesArgument, JsonOption, OutOption, Protocol, ProtocolOption, UrlOption, WorkersOption
from trtrepo.errors import UserError
from trtrepo.format.config import Variant
from trtrepo.models import MODELS
from trtrepo.models.detection import DEFAULT_CONF, DEFAULT_IOU, Detection, to_image_coords
from trtrepo.models.yolov3 import LETTERBOXES
from trtrepo.serving.access import use_api_key
from trtrepo.serving.client import RESTART_WAIT_S, InferenceClient, ask_pipeline, collect_images, is_pipeline, served_spec
from trtrepo.specs import DETECTION, TASK_CLIENTS, ModelSpec

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


def served_detector(client: InferenceClient, model: str) -> ModelSpec:
    """The detector the served config names (a declared one from its declaration), else the built-in model the
    variant's name (yolov3_tiny_onnxruntime_fp32) names."""
    named = Variant.parse(model).model if Variant.is_variant(model) else model
    spec = served_spec(client, named if named in MODELS else "yolov3_tiny")
    if spec.task != DETECTION:
        raise UserError(f"{model} is not a detector ({spec.task}): use {TASK_CLIENTS[spec.task]}")
    return spec


WAVE = 64  # images prepared and in flight at once: bounds memory on large folders
Letterboxing = Enum("Letterboxing", {name: name for name in LETTERBOXES}, type=str)


def detect(
    images: list[Path], model: str, url: str | None, protocol: str, batch_size: int, conf: float, iou: float,
    workers: int = 4, on_done=lambda count: None, results: list[list[Detection]] | None = None,
    letterbox: str = "darknet",
) -> list[list[Detection]]:
    """Letterbox here (Darknet's own resize by default), send batches concurrently through Triton, NMS here;
    boxes in image pixels.

    Results are appended to ``results`` as each wave of images is answered, so a caller keeps what came back
    before a failure."""
    client = InferenceClient(model, url=url, protocol=protocol, concurrency=workers, wait_s=RESTART_WAIT_S)
    spec = served_detector(client, model)
    step = client.batch_step(batch_size)
    results = [] if results is None else results
    for start in range(0, len(images), WAVE):
        prepared = [spec.letterbox(path, letterbox) for path in images[start : start + WAVE]]
        requests = [{spec.inputs[0].name: np.stack([a for a, _ in prepared[i : i + step]])} for i in range(0, len(prepared), step)]
        raw = client.infer_many(requests, lambda: on_done(step))
        found = [d for output in raw for d in spec.postprocess(output, conf=conf, iou=iou)]
        results += [to_image_coords(d, box) for d, (_, box) in zip(found, prepared)]
    return results


def detect_server_side(
    images: list[Path], model: str, url: str | None, protocol: str, conf: float, iou: float,
    workers: int = 4, on_done=lambda count: None, results: list[list[Detection]] | None = None,
) -> list[list[Detection]]:
    """Encoded bytes to the pipeline model; Triton decodes, letterboxes, infers and runs NMS (``results`` as
    for detect)."""
    thresholds = {"conf": np.array([[conf]], dtype=np.float32), "iou": np.array([[iou]], dtype=np.float32)}
    results = [] if results is None else results
    for spec, out in ask_pipeline(images, model, url, protocol, thresholds, DETECTION, workers, on_done):
        results.append([Detection(int(c), spec.class_names[int(c)], float(s), tuple(float(v) for v in box))
                        for box, s, c in zip(out["boxes"][0], out["scores"][0], out["class_ids"][0])])
    return results


def annotate(image_path: Path, detections: list[Detection], out_dir: Path) -> Path:
    """A copy of the image with each box and its label drawn, saved under out_dir with the same name."""
    from PIL import Image, ImageDraw

    colours = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]
    with Image.open(image_path) as original:
        image = original.convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for d in detections:
        colour = colours[d.class_id % len(colours)]
        draw.rectangle(d.box, outline=colour, width=width)
        text = f"{d.label} {d.score:.2f}"
        left, top, right, bottom = draw.textbbox((d.box[0], d.box[1]), text)
        draw.rectangle((left, top - (bottom - top) - 4, right + 4, top), fill=colour)
        draw.text((left + 2, top - (bottom - top) - 3), text, fill="white")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / image_path.name
    image.save(target)
    return target


@app.command()
def main(
    images: ImagesArgument,
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
    model: Annotated[str, typer.Option(help="A YOLO variant, or with --server-side a pipeline model.")] = "yolov3_tiny_onnxruntime_fp32",
    batch_size: BatchOption = 4,
    conf: Annotated[float, typer.Option(min=0.0, max=1.0, help="Score threshold (objectness x class probability).")] = DEFAULT_CONF,
    iou: Annotated[float, typer.Option(min=0.0, max=1.0, help="NMS overlap threshold.")] = DEFAULT_IOU,
    server_side: Annotated[bool, typer.Option("--server-side", help="Send encoded images to the pipeline model (a variant name stands for its model's pipeline); a pipeline's "
                                   "own name (--model yolov3_tiny) needs no flag.")] = False,
    letterbox: Annotated[Letterboxing, typer.Option(
        help="darknet: Darknet's own letterbox (bilinear, corners aligned, sizes rounded down), the boxes Darknet "
             "and OpenCV's Darknet importer find; pil: PIL's antialiased resize. A declared detector letterboxes as "
             "its declaration says.")] = Letterboxing.darknet,
    workers: WorkersOption = 4,
    out: OutOption = None,
    as_json: JsonOption = False,
    api_key: ApiKeyOption = None,
) -> None:
    """Print each image's detections; optionally write annotated images and JSON."""
    from rich.progress import Progress

    use_api_key(api_key)
    paths = collect_images(images)
    server_side = server_side or is_pipeline(model, url, protocol.value)
    results: list[list[Detection]] = []
    try:
        with Progress(transient=True, disable=len(paths) < 8) as progress:
            task = progress.add_task("detecting", total=len(paths))
            advance = lambda count: progress.advance(task, count)  # noqa: E731
            if server_side:
                detect_server_side(paths, model, url, protocol.value, conf, iou, workers, advance, results)
            else:
                detect(paths, model, url, protocol.value, batch_size, conf, iou, workers, advance, results,
                       letterbox.value)
    except UserError as exc:
        if not results:
            raise
        report(paths[: len(results)], results, out, as_json)
        raise UserError(f"{exc} (after {len(results)} of {len(paths)} images, whose detections are above)") from exc
    report(paths, results, out, as_json)


def report(paths: list[Path], results: list[list[Detection]], out: Path | None, as_json: bool) -> None:
    """Print each image's detections (or JSON); with ``out``, write the annotated copies."""
    if out is not None:
        for path, detections in zip(paths, results):
            annotate(path, detections, out)
    if as_json:
        print(json.dumps([{"image": str(p), "detections": [d.as_dict() for d in r]} for p, r in zip(paths, results)], indent=2))
        return
    for path, detections in zip(paths, results):
        print(f"{path}: {len(detections)} detections")
        for d in detections:
            print(f"  {d.label:<14} {d.score:.3f}  ({d.box[0]:.0f}, {d.box[1]:.0f}, {d.box[2]:.0f}, {d.box[3]:.0f})")
    if out is not None:
        print(f"annotated images in {out}")


if __name__ == "__main__":
    run_app(app)
