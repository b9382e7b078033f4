"""How much evidence a gate measure rests on: its number of distinct images and a 95% interval over them.

Samples cut from one photo (crops, mirror images) agree or disagree with FP32 much as the photo does, and the boxes
of one photo are found or missed together, so the unit of evidence is the distinct image (by content hash), never
the sample or the box. Proportions (top-1 agreement, box recall): Wilson's interval of the measured share with n the
number of distinct images. mAP@.5 and text-line F: bootstrapped over images (whole images drawn with replacement, the
measure recomputed); over a few images the bootstrap's interval is too narrow, which the image count beside it says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

#: The normal quantile of a two-sided 95% interval.
Z95 = 1.959964
#: Bootstrap draws: the percentile interval's ends move by about 0.01 between seeds at this count.
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Interval:
    """A measure's 95% interval, the method that gave it, and the number of independent images behind it."""

    low: float
    high: float
    images: int
    method: str  # "wilson" | "bootstrap"

    def text(self) -> str:
        return f"95% {self.low:.3f}-{self.high:.3f} over {self.images} images, {self.method}"


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion (good near 0 and 1, where the normal one is not);
    ``successes`` may be a share times n where the share is measured on more samples than n independent ones."""
    if n <= 0:
        return 0.0, 1.0
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def images_needed(threshold: float, z: float = Z95) -> int:
    """The fewest independent images on which a perfect score's Wilson lower end reaches ``threshold``."""
    if threshold >= 1:
        raise ValueError("no number of images bounds a share of 1 from below")
    n = 1
    while wilson(n, n, z)[0] < threshold:
        n *= 2
    low, high = n // 2, n
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if wilson(middle, middle, z)[0] < threshold else (low, middle)
    return high


def decides(least: float, interval: dict | None) -> bool:
    """Whether a measure's 95% interval (Interval's fields) decides its gate at ``least``: where it rests on enough
    distinct images that a perfect score's lower end would clear the threshold. On fewer (the few shipped photos)
    no score could pass that way, and the point estimate decides, said as such."""
    return interval is not None and least < 1 and interval["images"] >= images_needed(least)


def bootstrap(groups: Sequence[Sequence[int]], statistic: Callable[[list[int]], float], rounds: int = BOOTSTRAP_ROUNDS,
              seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``statistic`` over samples drawn as whole groups (images) with
    replacement; the statistic takes the drawn samples' indices."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        drawn = rng.integers(0, len(groups), size=len(groups))
        values.append(statistic([index for group in drawn for index in groups[group]]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def groups_of(keys: Sequence[str]) -> list[list[int]]:
    """Sample indices grouped by their image's key (its content hash), in order of first appearance."""
    grouped: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        grouped.setdefault(key, []).append(index)
    return list(grouped.values())
