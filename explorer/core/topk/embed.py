"""The map of codes (van der Maaten & Hinton 2008; Karpathy's cnnembed): images placed in 2-D by their codes.

:func:`embed_steps` yields a PCA layout first (instant), then the t-SNE layout as it forms (openTSNE,
in chunks of iterations: closing the generator stops it between chunks; scikit-learn's TSNE when
openTSNE is not installed, in one go), and returns the final :class:`Embedding`. :func:`map_quality`
measures a layout: scikit-learn's trustworthiness (are the map's neighbours neighbours in code space?)
and the k-NN label agreement (the share of each image's 5 nearest map neighbours that have its label).
:func:`snap_to_grid` moves the points onto a square grid, one per cell, keeping them as close as it can
to where t-SNE put them (an optimal assignment).
"""
from __future__ import annotations

import math
import os
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np


@dataclass
class Embedding:
    coords: np.ndarray  # (N, 2) float32
    method: str  # "pca", "t-SNE (openTSNE)", "t-SNE (scikit-learn)"
    iterations: int = 0
    final: bool = False


def pca_2d(codes: np.ndarray) -> np.ndarray:
    x = np.asarray(codes, np.float64)
    x = x - x.mean(0)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), np.float32)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :2] * s[:2]
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def embed_steps(codes: np.ndarray, *, perplexity: float = 30.0, iterations: int = 750, seed: int = 0,
                chunk: int = 50, threads: int | None = None) -> Generator[Embedding, None, Embedding]:
    """PCA, then t-SNE of ``codes`` (N, D); each yield is a layout so far, the return the final one."""
    codes = np.asarray(codes, np.float32)
    n = codes.shape[0]
    pca = pca_2d(codes)
    yield Embedding(pca, "pca")
    if n < 6:  # too few points for t-SNE's neighbourhoods
        return Embedding(pca, "pca", final=True)
    perplexity = float(min(perplexity, (n - 1) / 3.0))
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    try:
        from openTSNE import TSNEEmbedding, affinity, initialization  # noqa: PLC0415
    except ImportError:
        from sklearn.manifold import TSNE  # noqa: PLC0415

        coords = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(codes)
        return Embedding(coords.astype(np.float32), "t-SNE (scikit-learn)", iterations, True)
    aff = affinity.PerplexityBasedNN(codes, perplexity=perplexity, n_jobs=threads, random_state=seed)
    init = initialization.rescale(pca.astype(np.float64))
    emb = TSNEEmbedding(init, aff, n_jobs=threads, random_state=seed)
    early = min(250, iterations // 3)
    done = 0
    while done < iterations:
        step = min(chunk, iterations - done)
        if done < early:
            step = min(step, early - done)
            emb = emb.optimize(step, exaggeration=12, momentum=0.5, inplace=True)
        else:
            emb = emb.optimize(step, momentum=0.8, inplace=True)
        done += step
        if done < iterations:
            yield Embedding(np.asarray(emb, np.float32).copy(), "t-SNE (openTSNE)", done)
    return Embedding(np.asarray(emb, np.float32).copy(), "t-SNE (openTSNE)", done, True)


def knn_agreement(coords: np.ndarray, labels, k: int = 5) -> float:
    """Mean share of each point's ``k`` nearest neighbours in the map (itself excluded) with its label."""
    from sklearn.neighbors import NearestNeighbors  # noqa: PLC0415

    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return float("nan")
    k = min(k, n - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords, return_distance=False)[:, 1:]
    return float((labels[idx] == labels[:, None]).mean())


def map_quality(codes: np.ndarray, coords: np.ndarray, labels, k: int = 5) -> dict:
    """``trustworthiness`` (scikit-learn, ``k`` neighbours) and ``knn_agreement`` of a layout."""
    from sklearn.manifold import trustworthiness  # noqa: PLC0415

    n = len(coords)
    trust = float(trustworthiness(codes, coords, n_neighbors=min(k, max(1, n // 2 - 1)))) if n > 3 else float("nan")
    return {"trustworthiness": trust, "knn_agreement": knn_agreement(coords, labels, k), "k": k}


def snap_to_grid(coords: np.ndarray) -> np.ndarray:
    """Each point moved to its own cell of a square grid (side ceil(sqrt(N))), minimising the total squared
    distance moved (scipy's linear_sum_assignment), in the layout's own units."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    coords = np.asarray(coords, np.float64)
    n = len(coords)
    if n == 0:
        return coords.astype(np.float32)
    side = max(1, math.ceil(math.sqrt(n)))
    lo, hi = coords.min(0), coords.max(0)
    unit = (coords - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    gy, gx = np.mgrid[0:side, 0:side]
    grid = np.stack([gx.ravel(), gy.ravel()], 1) / max(1, side - 1)
    cost = ((unit[:, None, :] - grid[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty_like(unit)
    out[rows] = grid[cols]
    return (lo + out * np.where(hi - lo > 0, hi - lo, 1.0)).astype(np.float32)
