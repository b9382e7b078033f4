"""Classify images with a ResNet50 (or other ImageNet classifier) variant served by Triton: top-k labels with scores.

    python clients/resnet_client.py IMAGE_OR_FOLDER... [--url HOST:PORT] [--protocol http|grpc] [--model NAME] [--server-side]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from trtrepo.cli.app import run_app
from trtrepo.clients.options import (
    ApiKeyOption,
    BatchOption,
    ImagesArgument,
    JsonOption,
    Protocol,
    ProtocolOption,
    UrlOption,
    WorkersOption,
)
from trtrepo.errors import UserError
from trtrepo.format.config import Variant
from trtrepo.models import MODELS
from trtrepo.serving.access import use_api_key
from trtrepo.serving.client import RESTART_WAIT_S, InferenceClient, ask_pipeline, collect_images, is_pipeline, served_spec
from trtrepo.specs import CLASSIFICATION, TASK_CLIENTS

app = typer.Typer(add_completion=False, help=__doc__)


def classify(
    images: list[Path], model: str, url: str | None, protocol: str, batch_size: int, top_k: int,
    server_labels: bool = False,
) -> list[list[tuple[str, float]]]:
    """Preprocess with the model spec, infer through Triton, postprocess: one top-k list per image.

    The spec is the one the served config names (a declared model's from its declaration), else the model named in
    the variant (<model>_<engine>_<precision>), ResNet50 for other names.
    ``server_labels``: the server picks the top-k and names them (Triton's classification extension, class_count),
    so only k labels travel back; scores are then the model's logits, not probabilities.
    """
    named = Variant.parse(model).model if Variant.is_variant(model) else None
    client = InferenceClient(model, url=url, protocol=protocol, wait_s=RESTART_WAIT_S)
    spec = served_spec(client, named if named in MODELS else "resnet50")
    if spec.task != CLASSIFICATION:
        raise UserError(f"{model} is not a classifier ({spec.task}): use {TASK_CLIENTS[spec.task]}")
    samples = {spec.inputs[0].name: np.stack([spec.preprocess(path) for path in images])}
    if not server_labels:
        return spec.postprocess(client.infer_batches(samples, batch_size), top_k)
    labelled = [o for o in client.config.output if o.label_filename]
    if not labelled:
        raise UserError(f"{model} declares no labels file on the server (label_filename): rebuild it with `trtrepo repo`")
    step = client.batch_step(batch_size)
    name = spec.inputs[0].name
    return [row for i in range(0, len(images), step)
            for row in client.classify({name: samples[name][i:i + step]}, labelled[0].name, top_k)]


def classify_server_side(images: list[Path], model: str, url: str | None, protocol: str, top_k: int,
                         workers: int = 4) -> list[list[tuple[str, float]]]:
    """Encoded bytes to the classifier's pipeline model; Triton decodes, resizes, infers and picks the top-k
    (softmax probabilities, as the client-side path prints)."""
    options = {"top_k": np.array([[top_k]], dtype=np.int32)}
    return [[(label.decode(), float(score)) for label, score in zip(out["labels"][0], out["scores"][0])]
            for _, out in ask_pipeline(images, model, url, protocol, options, CLASSIFICATION, workers)]


@app.command()
def main(
    images: ImagesArgument,
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
    model: Annotated[str, typer.Option(help="Any ResNet50 or EfficientNet-Lite0 variant in the repository, or with "
                                            "--server-side its pipeline model.")] = "resnet50_onnxruntime_fp32",
    batch_size: BatchOption = 8,
    top_k: Annotated[int, typer.Option(min=1, max=1000, help="Labels to print per image.")] = 5,
    server_labels: Annotated[bool, typer.Option(
        "--server-labels", help="Let the server pick and name the top-k (Triton's classification extension): only "
                                "k labels come back instead of every logit; scores are then logits, not probabilities.")] = False,
    server_side: Annotated[bool, typer.Option(
        "--server-side", help="Send the encoded images to the model's pipeline (a variant name stands for its "
                              "model's pipeline): the server decodes, resizes, classifies and names the top-k. A "
                              "pipeline's own name (--model resnet50) needs no flag.")] = False,
    workers: WorkersOption = 4,
    as_json: JsonOption = False,
    api_key: ApiKeyOption = None,
) -> None:
    """Print the top-k ImageNet labels of each image, as classified by MODEL on the server."""
    use_api_key(api_key)
    paths = collect_images(images)
    server_side = server_side or is_pipeline(model, url, protocol.value)
    if server_side and server_labels:
        raise UserError("--server-side and --server-labels exclude each other: the pipeline always names the top-k")
    if server_side:
        results = classify_server_side(paths, model, url, protocol.value, top_k, workers)
    else:
        results = classify(paths, model, url, protocol.value, batch_size, top_k, server_labels)
    if as_json:
        print(json.dumps([{"image": str(p), "top": [{"label": l, "score": s} for l, s in r]} for p, r in zip(paths, results)], indent=2))
        return
    for path, result in zip(paths, results):
        print(f"{path}:")
        for label, score in result:
            print(f"  {score:7.4f}  {label}")


if __name__ == "__main__":
    run_app(app)
