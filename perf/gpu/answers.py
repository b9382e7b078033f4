"""Do a repository's pipelines answer the photos as the client-side path does, on this machine (its GPU's nvJPEG
decode and preprocessing against PIL's on the client)?

    python perf/gpu/answers.py REPOSITORY PIPELINE[,PIPELINE...] PHOTOS [--output FILE]

Serves the repository (the study passes one holding only the pipeline and the variant it calls), sends every photo
both ways, and writes per pipeline how many photos got the same answer: the same top-5
labels and the largest score difference for a classifier; the same labels and the largest box corner difference
(pixels) for a detector. Exits 1 where an answer differs beyond the CPU test's tolerances (tests/test_integration.py,
tests/test_yolo.py), after writing them all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from trtrepo.clients.resnet_client import classify, classify_server_side
from trtrepo.clients.yolo_client import detect, detect_server_side
from trtrepo.format.config import repository_pipelines
from trtrepo.models import get_model
from trtrepo.serving.endpoints import own_server
from trtrepo.specs import CLASSIFICATION

TOP_K = 5
SCORE_TOLERANCE = 1e-2  # softmax probability, against 1e-4 on the CPU: nvJPEG and PIL decode within a grey level
BOX_TOLERANCE_PX = 2.0
CONF, IOU = 0.3, 0.45


def classifier_row(pipeline: str, variant: str, photos: list[Path], url: str) -> tuple[str, bool]:
    client = classify(photos, variant, url, "grpc", batch_size=8, top_k=TOP_K)
    server = classify_server_side(photos, pipeline, url, "grpc", top_k=TOP_K)
    same_top1 = sum(c[0][0] == s[0][0] for c, s in zip(client, server))
    same_top5 = sum([label for label, _ in c] == [label for label, _ in s] for c, s in zip(client, server))
    worst = max(abs(a - b) for c, s in zip(client, server) for (_, a), (_, b) in zip(c, s))
    held = same_top5 == len(photos) and worst <= SCORE_TOLERANCE
    return (f"| {pipeline} | {variant} | {len(photos)} | top-1 {same_top1}, top-5 in order {same_top5} | "
            f"largest score difference {worst:.2e} | {'same' if held else 'DIFFERENT'} |"), held


def detector_row(pipeline: str, variant: str, photos: list[Path], url: str) -> tuple[str, bool]:
    client = detect(photos, variant, url, "grpc", 8, CONF, IOU)
    server = detect_server_side(photos, pipeline, url, "grpc", CONF, IOU)
    same = [[d.label for d in c] == [d.label for d in s] for c, s in zip(client, server)]
    corners = [float(np.abs(np.array([d.box for d in c]) - np.array([d.box for d in s])).max())
               for c, s, ok in zip(client, server, same) if ok and c]
    worst = max(corners, default=0.0)
    boxes = sum(len(c) for c in client)
    held = all(same) and worst <= BOX_TOLERANCE_PX
    return (f"| {pipeline} | {variant} | {len(photos)} | same labels {sum(same)} ({boxes} boxes client-side) | "
            f"largest box corner difference {worst:.2f} px | {'same' if held else 'DIFFERENT'} |"), held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path)
    parser.add_argument("pipelines")
    parser.add_argument("photos", type=Path)
    parser.add_argument("--output", type=Path, default=Path("answers.md"))
    args = parser.parse_args()
    repository = args.repository.resolve()
    served = repository_pipelines(repository)
    pipelines = args.pipelines.split(",")
    missing = [name for name in pipelines if name not in served]
    if missing:
        print(f"error: {', '.join(missing)} is no pipeline of {repository}", file=sys.stderr)
        return 2
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows, held = [], True
    with own_server(repository) as server:
        for pipeline in pipelines:
            row = classifier_row if get_model(pipeline).task == CLASSIFICATION else detector_row
            line, ok = row(pipeline, served[pipeline], photos, server.grpc_url)
            print(line, flush=True)
            rows.append(line)
            held &= ok
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("| pipeline | variant (client side) | photos | agreement | difference | verdict |\n"
                           "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(f"wrote {args.output}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
