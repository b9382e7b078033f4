"""The whole path on this machine (demo), and the pack for a GPU machine without network (gpu-pack)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtrepo.cli.app import DEMO_MODELS, DEMO_PAGE_SEED, DEMO_TEXT_PLAN, DEMO_WEIGHTS, REPOSITORY, app, int_list, name_list, say
from trtrepo.cli.build import build_plan
from trtrepo.format.config import repository_variants
from trtrepo.perf.progress import console, report_sweep, sweep_with_progress
from trtrepo.serving.access import Endpoint
from trtrepo.serving.endpoints import own_server


@app.command()
def demo(
    weights: Annotated[str, typer.Option(help="Per model; ResNet50's and YOLOv3's pretrained weights need a download or its cache.")] = DEMO_WEIGHTS,
    output: Annotated[Path, typer.Option(help="Repository folder to build.")] = REPOSITORY,
    instances: Annotated[str, typer.Option(help="Instance counts for the short sweep.")] = "1,2",
    concurrency: Annotated[str, typer.Option(help="Concurrencies for the short sweep.")] = "2",
) -> None:
    """The whole path on this machine: build the CPU repository, serve it, classify sample photos, find text lines
    on a photographed page and rendered ones, sweep, report."""
    from trtrepo.accuracy.evaluate import find_text, gate_table
    from trtrepo.accuracy.icdar import text_ground_truth
    from trtrepo.build.plan import load_plan
    from trtrepo.clients.ctpn_client import annotate as annotate_text, find_text_server_side
    from trtrepo.clients.resnet_client import classify, classify_server_side
    from trtrepo.clients.yolo_client import annotate, detect, detect_server_side
    from trtrepo.format.config import Variant, repository_pipelines
    from trtrepo.imagesets import shipped_photos, text_photos
    from trtrepo.models import get_model
    from trtrepo.specs import DETECTION, TEXT
    from trtrepo.text_pages import write_pages

    # A variant its accuracy gate sets aside (INT8 judged on the photo pool, where fetched) is shown refused, and the
    # demo goes on with the rest.
    build_plan(load_plan(None, name_list(DEMO_MODELS), weights, output), go_on_past_gate=True)
    # CTPN, trained: ONNX Runtime FP32 and its pipeline, checked against PyTorch on two rendered pages of text.
    pages = write_pages(Path("perf/results/text-pages"), 2, shipped_photos()[:1], first_seed=DEMO_PAGE_SEED)
    build_plan(load_plan(DEMO_TEXT_PLAN, output=output, eval_dir=pages[0].parent))
    if "random" in weights:
        console.print(f"[yellow]weights {weights}: labels from random weights are meaningless; the path is what they show[/yellow]")
    photos = shipped_photos()
    variants = repository_variants(output)
    counts, concurrencies = int_list(instances, "--instances"), int_list(concurrency, "--concurrency")
    annotated = Path("perf/results/annotated")
    server = own_server(output, say)
    console.print(f"starting tritonserver from {server.installation.source} (log {server.log_file}) ...")
    with server:
        print(f"tritonserver ready: http {server.http_url}  grpc {server.grpc_url}")
        texts = text_photos() + pages
        truths = dict(text_ground_truth(pages[0].parent, pages[0].parent / "gt"))
        unswept = []  # CTPN's variant and pipeline: its speed is make bench's
        for variant in variants:
            task = get_model(Variant.parse(variant).model).task
            if task == TEXT:
                unswept.append(variant)
                print(f"\npython clients/ctpn_client.py --url {server.http_url} --model {variant} --out {annotated} IMAGES")
                for path, lines in zip(texts, find_text(texts, variant, server.http_url, "http")):
                    annotate_text(path, lines, annotated / variant)
                    print(f"  {path.name}: {len(lines)} text lines{_against_rendered(truths.get(path), lines)}, " + ", ".join(
                        "({:.0f},{:.0f})-({:.0f},{:.0f})".format(*line.bounds()) for line in lines[:4]) + (" ..." if len(lines) > 4 else ""))
            elif task == DETECTION:
                print(f"\npython clients/yolo_client.py --url {server.http_url} --model {variant} --out {annotated} PHOTOS")
                for path, found in zip(photos, detect(photos, variant, server.http_url, "http", 4, 0.25, 0.45)):
                    if found:
                        annotate(path, found, annotated / variant)
                        print(f"  {path.name}: " + ", ".join(f"{d.label} {d.score:.2f}" for d in found[:6]))
            else:
                print(f"\npython clients/resnet_client.py --url {server.http_url} --model {variant} PHOTOS")
                for path, result in zip(photos[:4], classify(photos[:4], variant, server.http_url, "http", 8, 3)):
                    print(f"  {path.name}: " + ", ".join(f"{label} {score:.3f}" for label, score in result))
        for pipeline, variant in repository_pipelines(output).items():
            task = get_model(Variant.parse(variant).model).task
            if task == TEXT:
                unswept.append(pipeline)
                print(f"\npython clients/ctpn_client.py --url {server.http_url} --server-side --model {pipeline} IMAGES"
                      f"  (bytes in: the server decodes, resizes, runs {variant} and connects the proposals into lines)")
                for path, lines in zip(texts, find_text_server_side(texts, pipeline, server.http_url, "http", get_model("ctpn").line_min_score)):
                    print(f"  {path.name}: {len(lines)} text lines")
            elif task == DETECTION:
                print(f"\npython clients/yolo_client.py --url {server.http_url} --server-side --model {pipeline} PHOTOS"
                      f"  (bytes in: the server decodes, letterboxes, batches, runs {variant} and NMS)")
                for path, found in zip(photos, detect_server_side(photos, pipeline, server.http_url, "http", 0.25, 0.45)):
                    if found:
                        print(f"  {path.name}: " + ", ".join(f"{d.label} {d.score:.2f}" for d in found[:6]))
            else:
                print(f"\npython clients/resnet_client.py --url {server.http_url} --server-side --model {pipeline} PHOTOS"
                      f"  (bytes in: the server decodes, resizes, batches, runs {variant} and names the top-k)")
                for path, result in zip(photos[:4], classify_server_side(photos[:4], pipeline, server.http_url, "http", 3)):
                    print(f"  {path.name}: " + ", ".join(f"{label} {score:.3f}" for label, score in result))
        # The pipelines beside their variants: photos in against tensors in, in one run.
        measured = [name for name in variants + list(repository_pipelines(output)) if name not in unswept]
        points = sweep_with_progress([Endpoint(server.grpc_url, server.metrics_url)], measured, counts, concurrencies, 1, 1500)
    report_sweep(points, Path("perf/results"))
    print("\nSpeed and accuracy per variant (the study's Table 3, with the accuracy gate):\n")
    print(gate_table(points, output))
    print(f"annotated detections and text lines in {annotated}/; server stopped")


def _against_rendered(truth: list | None, lines: list) -> str:
    """`` (3 rendered, 3 of them found at IoU >= 0.5)`` for a rendered page's lines, '' for a photo of text."""
    from trtrepo.accuracy.metrics import match_boxes

    if truth is None:
        return ""
    return f" ({len(truth)} rendered, {match_boxes([line.bounds() for line in lines], truth)} of them found at IoU >= 0.5)"


@app.command("gpu-pack")
def gpu_pack(
    output: Annotated[Path, typer.Option(help="Folder to fill; name it in the device run's carry.")] = Path(".gpu"),
    bundle_script: Annotated[Path, typer.Option(help="Script that packs tritonserver + perf_analyzer for the GPU machine.")]
    = Path("../shared/device/make-triton-bundle.sh"),
    python: Annotated[str, typer.Option(help="The GPU machine's Python version.")] = "3.12",
    force: Annotated[bool, typer.Option(help="Pack the server bundle again even if one is there.")] = False,
) -> None:
    """Pack what a GPU machine without network needs for perf/gpu/study.sh: the tritonserver + perf_analyzer
    bundle, the wheels its Python lacks (tritonclient's pure-Python client, python-rapidjson) and numpy 1.26 for
    the Python-backend stub alone (the server's stub garbles tensors under the machine's numpy 2). The project's
    own code travels with the working tree; PyTorch and ONNX Runtime are the machine's."""
    from trtrepo.perf.gpu_pack import pack

    pack(output, bundle_script, python, force, say)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 2**20
    print(f"packed {output} ({size:.0f} MiB). On the GPU machine, from the repository root, with {output} carried:\n"
          f"  bash perf/gpu/study.sh resnet50,yolov3 bench,sweep,cpu")
