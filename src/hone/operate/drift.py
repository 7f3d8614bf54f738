"""Input drift: how far the prompts a served model now receives are from the prompts it was trained on.

Both samples are embedded with the ladder's local sentence embedder (hone.models.embedder), and two
questions are asked of the embeddings:

- Do the two samples come from one distribution? A kernel two-sample test (MMD with an RBF kernel) with a
  permutation p-value. It sees any change of the distribution, including a shift in the mix of familiar
  topics, but it does not say which prompts moved.
- Are recent prompts somewhere the training split never was? Each recent prompt's distance to its nearest
  training prompt, against the training split's own nearest-other-prompt distances: beyond the training
  split's 95th percentile a prompt is out of distribution, and without drift about 5% of recent prompts
  are. The farthest ones are listed, so a person can read what is new.

The two answer different shifts. With the median-distance bandwidth the kernel test is strong against a
change of the whole distribution and weak against a small new topic: 30 prompts of something new among
300 may not reach p < 0.01, while the out-of-distribution share flags them at once. The share's binomial
p-value treats the 95th-percentile threshold as exact; it is estimated from the reference, so with a few
hundred reference rows the p-value runs somewhat low.

Whether either result counts as drift is the caller's threshold; `Drift` is only the measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hone.errors import HoneError
from hone.models.embedder import embed

MIN_ROWS = 5
# The permutation test holds a (reference + recent)^2 kernel matrix; capping both samples keeps it at
# 4,000^2 float64 (128 MB) and 1,000 permutations to a second or two. The nearest-neighbour distances,
# cheap by comparison, use every row.
MAX_TEST_ROWS = 2000
# The median of ~500,000 pairwise distances is as good a bandwidth as the median of all of them.
MAX_BANDWIDTH_ROWS = 1000
PERMUTATION_BLOCK = 250
NEAREST_BLOCK = 1024
UNIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Drift:
    """How far a recent sample of prompt embeddings is from a reference (training) sample.

    Distances are cosine distances (1 - cosine similarity) between unit-length embeddings.
    """

    reference_rows: int
    recent_rows: int
    # the two-sample test, on seeded subsamples of at most MAX_TEST_ROWS rows per side
    tested_reference_rows: int
    tested_recent_rows: int
    mmd: float  # unbiased squared MMD; about 0 (and may be slightly negative) when nothing changed
    mmd_p_value: float
    permutations: int
    bandwidth: float  # the RBF kernel's length scale: the median pairwise Euclidean distance
    # the effect size: mean nearest-reference distance of recent prompts, against the reference's own
    # mean distance to its nearest other row
    recent_mean_distance: float
    reference_mean_distance: float
    # out of distribution: farther from every reference row than `quantile` of reference rows are from
    # their nearest other reference row
    quantile: float
    ood_threshold: float
    ood_share: float
    ood_expected_share: float  # 1 - quantile: the share without drift
    ood_p_value: float  # one-sided binomial: a share this high or higher without drift
    outliers: list[tuple[int, float]] = field(default_factory=list)  # (index into recent, distance)

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["outliers"] = [{"index": index, "distance": distance} for index, distance in self.outliers]
        return result


def embed_prompts(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings of prompt texts, by the same embedder the ladder's retrieval rungs use."""
    return embed(texts)


def measure_drift(
    reference: np.ndarray,
    recent: np.ndarray,
    *,
    permutations: int = 1000,
    seed: int = 0,
    top: int = 10,
    quantile: float = 0.95,
) -> Drift:
    """Measure how far `recent` embeddings (one unit-length row per prompt) are from `reference` ones.

    The two-sample test runs on seeded subsamples of at most MAX_TEST_ROWS rows of each side; the
    nearest-neighbour distances use every row. At 2,000 reference x 1,000 recent rows and 1,000
    permutations it takes one to two seconds on two busy CPU cores, most of it the permutations; at
    10,000 x 5,000 rows, about three.
    """
    reference = checked_embeddings(reference, "reference")
    recent = checked_embeddings(recent, "recent")
    if reference.shape[1] != recent.shape[1]:
        raise HoneError(
            f"drift: reference embeddings have {reference.shape[1]} dimensions and recent ones "
            f"{recent.shape[1]}; embed both with the same embedder"
        )
    if permutations < 1:
        raise HoneError(f"drift: permutations must be at least 1, got {permutations}")
    if not 0 < quantile < 1:
        raise HoneError(f"drift: quantile must be between 0 and 1, got {quantile}")
    rng = np.random.default_rng(seed)

    tested_reference = subsample(reference, MAX_TEST_ROWS, rng)
    tested_recent = subsample(recent, MAX_TEST_ROWS, rng)
    pooled = np.concatenate([tested_reference, tested_recent]).astype(np.float64)
    bandwidth = median_distance(subsample(pooled, MAX_BANDWIDTH_ROWS, rng))
    mmd, mmd_p_value = mmd_permutation_test(
        pooled, len(tested_reference), bandwidth, permutations=permutations, rng=rng
    )

    reference_distance = nearest_distance(reference, reference, exclude_self=True)
    recent_distance = nearest_distance(recent, reference)
    threshold = float(np.quantile(reference_distance, quantile))
    beyond = int(np.count_nonzero(recent_distance > threshold))
    expected = 1.0 - quantile
    farthest = np.argsort(-recent_distance, kind="stable")[:top]

    return Drift(
        reference_rows=len(reference),
        recent_rows=len(recent),
        tested_reference_rows=len(tested_reference),
        tested_recent_rows=len(tested_recent),
        mmd=mmd,
        mmd_p_value=mmd_p_value,
        permutations=permutations,
        bandwidth=bandwidth,
        recent_mean_distance=float(recent_distance.mean()),
        reference_mean_distance=float(reference_distance.mean()),
        quantile=quantile,
        ood_threshold=threshold,
        ood_share=beyond / len(recent),
        ood_expected_share=expected,
        ood_p_value=binomial_tail(beyond, len(recent), expected),
        outliers=[(int(index), float(recent_distance[index])) for index in farthest],
    )


def checked_embeddings(vectors: np.ndarray, name: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise HoneError(
            f"drift: {name} embeddings must be a 2-D array (one row per prompt), got {vectors.shape}"
        )
    if len(vectors) < MIN_ROWS:
        raise HoneError(
            f"drift: {len(vectors)} {name} prompts are too few to test; need at least {MIN_ROWS} on each side"
        )
    if not np.isfinite(vectors).all():
        raise HoneError(f"drift: {name} embeddings contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if np.abs(norms - 1).max() > UNIT_TOLERANCE:
        # cosine distance as 1 - dot, and the kernel's bandwidth, both assume unit rows
        raise HoneError(
            f"drift: {name} embeddings must be unit length; their norms range from {norms.min():.3g} "
            f"to {norms.max():.3g}"
        )
    return vectors


def subsample(vectors: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(vectors) <= limit:
        return vectors
    return vectors[np.sort(rng.choice(len(vectors), size=limit, replace=False))]


def squared_distances(vectors: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances between unit rows: 2 - 2 cos, clipped at rounding error."""
    return np.clip(2.0 - 2.0 * (vectors @ vectors.T), 0.0, None)


def median_distance(vectors: np.ndarray) -> float:
    """The median heuristic's bandwidth: the median Euclidean distance between two different rows."""
    upper = np.triu_indices(len(vectors), k=1)
    median = float(np.sqrt(np.median(squared_distances(vectors)[upper])))
    # more than half the pairs identical: any small positive scale separates "same" from "different"
    return max(median, 1e-6)


def mmd_permutation_test(
    pooled: np.ndarray, first: int, bandwidth: float, *, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The unbiased squared MMD between pooled[:first] and pooled[first:], and its permutation p-value.

    With K the kernel matrix with its diagonal zeroed, u a 0/1 vector marking the first sample, r = K 1 and
    t = 1'K1, the three sums the statistic needs are u'Ku, u'r - u'Ku and t - 2u'r + u'Ku: one matrix
    product per block of permutations computes the statistic for all of them at once.
    """
    total = len(pooled)
    second = total - first
    kernel = np.exp(squared_distances(pooled) / (-2.0 * bandwidth**2))
    np.fill_diagonal(kernel, 0.0)
    row_sums = kernel.sum(axis=1)
    grand_sum = row_sums.sum()

    def statistic(members: np.ndarray) -> np.ndarray:  # members: total x k, 0/1 columns
        within_first = np.einsum("ij,ij->j", members, kernel @ members)
        first_row_sums = row_sums @ members
        between = first_row_sums - within_first
        within_second = grand_sum - 2.0 * first_row_sums + within_first
        return (
            within_first / (first * (first - 1))
            + within_second / (second * (second - 1))
            - 2.0 * between / (first * second)
        )

    labels = np.zeros(total)
    labels[:first] = 1.0
    observed = statistic(labels[:, None])[0]
    at_least = 0
    for start in range(0, permutations, PERMUTATION_BLOCK):
        count = min(PERMUTATION_BLOCK, permutations - start)
        shuffled = rng.permuted(np.tile(labels, (count, 1)), axis=1).T
        at_least += int(np.count_nonzero(statistic(shuffled) >= observed))
    # the observed labelling counts as one of the permutations, so the p-value is never 0
    return float(observed), (at_least + 1) / (permutations + 1)


def nearest_distance(queries: np.ndarray, keys: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
    """Each query row's cosine distance to its nearest key row (to its nearest other row with
    `exclude_self`, where queries are the keys). In blocks of rows, so memory stays at block x keys."""
    result = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), NEAREST_BLOCK):
        similarity = queries[start : start + NEAREST_BLOCK] @ keys.T
        if exclude_self:
            rows = np.arange(len(similarity))
            similarity[rows, rows + start] = -np.inf
        result[start : start + len(similarity)] = 1.0 - similarity.max(axis=1)
    return np.clip(result, 0.0, 2.0)


def binomial_tail(successes: int, trials: int, probability: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, probability), summed exactly in log space."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    counts = np.arange(successes, trials + 1)
    log_choose = np.array(
        [math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) for k in counts]
    )
    log_terms = log_choose + counts * math.log(probability) + (trials - counts) * math.log1p(-probability)
    peak = log_terms.max()
    return float(min(1.0, math.exp(peak) * np.exp(log_terms - peak).sum()))
