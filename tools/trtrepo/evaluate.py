"""Accuracy per variant through Triton: top-1/top-5, agreement with the FP32 reference, time per batch.

The output is shaped like the study's Table 3 (time per batch, speedup, top-1 per precision).
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trtrepo.client import IMAGE_SUFFIXES, InferenceClient
from trtrepo.config import Variant
from trtrepo.errors import UserError
from trtrepo.specs import ModelSpec


@dataclass(frozen=True)
class EvalRow:
    variant: str
    images: int
    batch_size: int
    seconds_per_batch: float
    speedup: float  # baseline time per batch / this variant's
    top1: float
    top5: float
    agreement: float  # share of images whose top-1 equals the reference's


def labelled_images(data: Path, labels_file: Path | None, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """Images and class indices from class-name subfolders of ``data``, or from ``labels_file`` lines
    ``relative/path.jpg<whitespace>label`` where label is a class index or name."""
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"{data}: no such data folder")
    by_name = {name.lower(): index for index, name in enumerate(class_names)}

    def index_of(label: str, where: str) -> int:
        label = label.strip()
        if label.isdigit() and int(label) < len(class_names):
            return int(label)
        if label.lower() in by_name:
            return by_name[label.lower()]
        raise UserError(f"{where}: {label!r} is neither a class name nor an index below {len(class_names)}")

    pairs: list[tuple[Path, int]] = []
    if labels_file is not None:
        try:
            lines = Path(labels_file).read_text().splitlines()
        except OSError as exc:
            raise UserError(f"{labels_file}: cannot read labels file ({exc.strerror})") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise UserError(f"{labels_file}:{number}: expected 'path label', got {line!r}")
            pairs.append((data / parts[0], index_of(parts[1], f"{labels_file}:{number}")))
    else:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            label = index_of(folder.name.replace("_", " "), str(folder))
            pairs += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise UserError(f"{data}: no labelled images (class-name subfolders, or --labels FILE)")
    return [p for p, _ in pairs], np.array([label for _, label in pairs])


def predict(client: InferenceClient, samples: np.ndarray, input_name: str, batch_size: int) -> tuple[np.ndarray, float]:
    """Top-5 class indices per sample and the mean wall time per request of ``batch_size`` samples."""
    step = max(1, min(batch_size, client.config.max_batch_size or batch_size))
    client.infer({input_name: samples[:step]})  # warm-up, not timed
    logits, times = [], []
    for start in range(0, len(samples), step):
        began = time.perf_counter()
        output = client.infer({input_name: samples[start : start + step]})
        times.append(time.perf_counter() - began)
        logits.append(next(iter(output.values())))
    return np.argsort(-np.concatenate(logits), axis=1)[:, :5], float(np.mean(times))


def evaluate(
    spec: ModelSpec, url: str, protocol: str, variants: list[str], images: list[Path], labels: np.ndarray, batch_size: int
) -> tuple[list[EvalRow], str]:
    """Every variant on the same preprocessed images, and the reference: the model's eager-PyTorch FP32
    variant where evaluated, else the first FP32 one."""
    samples = np.stack([spec.preprocess(path) for path in images])
    predictions = {}
    for variant in variants:
        client = InferenceClient(variant, url=url, protocol=protocol)
        predictions[variant] = predict(client, samples, spec.inputs[0].name, batch_size)
    reference = Variant.parse(variants[0]).baseline
    if reference not in predictions:
        reference = next((v for v in variants if v.endswith("_fp32")), variants[0])
    ref_top1, ref_time = predictions[reference][0][:, 0], predictions[reference][1]
    rows = [
        EvalRow(
            variant=variant,
            images=len(images),
            batch_size=batch_size,
            seconds_per_batch=seconds,
            speedup=ref_time / seconds if seconds else 0.0,
            top1=float(np.mean(top5[:, 0] == labels)),
            top5=float(np.mean((top5 == labels[:, None]).any(axis=1))),
            agreement=float(np.mean(top5[:, 0] == ref_top1)),
        )
        for variant, (top5, seconds) in predictions.items()
    ]
    return rows, reference


def markdown(rows: list[EvalRow], reference: str) -> str:
    lines = [
        "| variant | time per batch (s) | speedup | top-1 | top-5 | top-1 agreement with reference |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.variant} | {row.seconds_per_batch:.4f} | {row.speedup:.2f}x | {row.top1:.4f} | "
                     f"{row.top5:.4f} | {row.agreement:.2%} |")
    first = rows[0]
    return "\n".join(lines) + (f"\n\n{first.images} images, batches of {first.batch_size}, through Triton; "
                               f"speedup and agreement relative to {reference}.\n")


def write_report(rows: list[EvalRow], reference: str, out_dir: Path) -> dict[str, Path]:
    """eval.csv, eval.md and eval.png (speedup and accuracy bars per variant) in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "eval.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    (out_dir / "eval.md").write_text("# Accuracy and speed per variant\n\n" + markdown(rows, reference))
    names = [r.variant for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.barh(names, [r.speedup for r in rows], color="tab:blue")
    left.set(xlabel=f"speedup over {reference} (time per batch)", title="Speed")
    width = 0.4
    positions = np.arange(len(rows))
    right.barh(positions - width / 2, [r.top1 for r in rows], width, label="top-1")
    right.barh(positions + width / 2, [r.agreement for r in rows], width, label="top-1 agreement with reference")
    right.set_yticks(positions, names)
    right.set(xlim=(0, 1.05), title="Accuracy")
    right.legend(fontsize=8, loc="lower right")
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_dir / "eval.png", dpi=110)
    plt.close(figure)
    return {"csv": out_dir / "eval.csv", "markdown": out_dir / "eval.md", "plot": out_dir / "eval.png"}
