"""CTPN's trained network on a GPU, in process: text-line F of FP16 (eager, and compiled by Inductor with
symbolic height and width) against FP32 on rendered pages of text, and against their truth, with time per page.

    python perf/gpu/ctpn_precision.py --weights CTPN.pth --pages DIR [--out FILE.md]

DIR holds pages and gt/gt_<page>.txt (trtrepo.text_pages.write_pages). The checkpoint may be a copy rounded to
FP16 (the device call carries at most 64 MiB): FP32 then runs those rounded weights, so the comparison is still
one network in two precisions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from trtrepo.accuracy.icdar import text_ground_truth  # noqa: E402
from trtrepo.accuracy.evidence import groups_of  # noqa: E402
from trtrepo.accuracy.measures import text_f_interval  # noqa: E402
from trtrepo.accuracy.metrics import match_boxes, precision_recall_f  # noqa: E402
from trtrepo.imagesets import content_hash  # noqa: E402
from trtrepo.models import get_model  # noqa: E402
from trtrepo.specs import load_image  # noqa: E402


def lines_of(network: torch.nn.Module, arrays: list[tuple[np.ndarray, float]], dtype: torch.dtype) -> tuple[list, float]:
    """Each page's line rectangles, and the mean seconds a page (after one warm-up page)."""
    spec = get_model("ctpn")
    found, seconds = [], []
    with torch.inference_mode():
        for index, (array, scale) in enumerate(arrays):
            torch.cuda.synchronize()
            began = time.perf_counter()
            scores, vertical = network(torch.from_numpy(array[None]).cuda().to(dtype))
            outputs = {"scores": scores.float().cpu().numpy(), "vertical": vertical.float().cpu().numpy()}
            torch.cuda.synchronize()
            if index:
                seconds.append(time.perf_counter() - began)
            found.append([line.bounds() for line in spec.postprocess(outputs, scale=scale)[0]])
    return found, float(np.mean(seconds))


def f_and_interval(found: list, truth: list, groups: list) -> str:
    matched = sum(match_boxes(f, t) for f, t in zip(found, truth))
    value = precision_recall_f(matched, sum(map(len, found)), sum(map(len, truth)))[2]
    interval = text_f_interval(found, truth, groups)
    return f"{value:.3f} ({interval.low:.3f}-{interval.high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--pages", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # FP32 is FP32
    spec = get_model("ctpn")
    pairs = text_ground_truth(args.pages, args.pages / "gt")
    arrays = [spec.resize(load_image(image)) for image, _ in pairs]
    truth = [lines for _, lines in pairs]
    groups = groups_of([content_hash(image) for image, _ in pairs])
    network = spec.build_network(str(args.weights)).float().cuda()
    reference, fp32_s = lines_of(network, arrays, torch.float32)
    half = network.half()
    eager, eager_s = lines_of(half, arrays, torch.float16)
    compiled, compiled_s = lines_of(torch.compile(half, dynamic=True), arrays, torch.float16)
    rows = [("FP32 eager", reference, fp32_s), ("FP16 eager", eager, eager_s), ("FP16 Inductor", compiled, compiled_s)]
    report = [f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {len(pairs)} pages, "
              f"{sum(map(len, truth))} true lines\n",
              "| precision | F vs FP32 (95%) | F vs truth (95%) | lines | ms/page | speed-up |", "|---|---|---|---|---|---|"]
    for name, found, seconds in rows:
        report.append(f"| {name} | {f_and_interval(found, reference, groups)} | {f_and_interval(found, truth, groups)} | "
                      f"{sum(map(len, found))} | {seconds * 1000:.1f} | {fp32_s / seconds:.2f}x |")
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
