"""Finding interpretable cells: indicator sequences, correlation/AUROC search, LSTMVis selection search.

An *indicator* is one number per character of the text describing the state after that character has
been read: inside a string literal (0/1), inside a comment, position in the line, indentation, bracket
depth, start of a word, inside a match of a user's regular expression. Karpathy, Johnson & Fei-Fei
(2016) found LSTM cells that track such quantities; :func:`cell_search` scores every cell of every
layer and quantity against every indicator at once. :func:`selection_search` is LSTMVis's way in
(Strobelt et al. 2018): the user marks spans, cells on inside and off around them are ranked, and other
places where those cells are on together are listed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from explorer.core.errors import InputError
from explorer.core.rnn.model import QUANTITIES
from explorer.core.rnn.replay import Replay


MIN_STD = 1e-4  # cells whose values vary less than this over the text count as constant


@dataclass(frozen=True)
class Indicator:
    name: str
    description: str
    values: np.ndarray  # (T,): bool for on/off indicators, int32 or float32 counts otherwise (compact for long texts)
    binary: bool  # on/off: scored by AUROC as well as Pearson r


@dataclass(frozen=True)
class CellRef:
    layer: int
    quantity: str
    index: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.quantity}:{self.index}"


@dataclass(frozen=True)
class CellScore:
    cell: CellRef
    r: float  # Pearson correlation with the indicator
    auroc: float | None  # on/off indicators: P(value inside > value outside)
    score: float  # what the ranking sorts by (|r|, or |AUROC − 0.5| for on/off indicators)

    def to_dict(self) -> dict:
        return {"layer": self.cell.layer, "quantity": self.cell.quantity, "index": self.cell.index,
                "r": round(self.r, 4), "auroc": None if self.auroc is None else round(self.auroc, 4)}


def parse_cell_ref(text: str, rep: Replay | None = None) -> CellRef:
    """``"LAYER:QUANTITY:INDEX"`` (e.g. ``1:c:42``) → :class:`CellRef`, checked against ``rep``."""
    parts = text.split(":")
    if len(parts) != 3:
        raise InputError(f"cell must be LAYER:QUANTITY:INDEX (e.g. 0:c:17), not {text!r}")
    try:
        ref = CellRef(int(parts[0]), parts[1].strip().lower(), int(parts[2]))
    except ValueError:
        raise InputError(f"cell must be LAYER:QUANTITY:INDEX with integer layer and index, not {text!r}") \
            from None
    if rep is not None:
        values = rep.get(ref.layer, ref.quantity)
        if not 0 <= ref.index < values.shape[1]:
            raise InputError(f"cell index {ref.index} out of range: layer {ref.layer} has "
                             f"{values.shape[1]} cells")
    return ref


def cell_values(rep: Replay, cell: CellRef) -> np.ndarray:
    return rep.get(cell.layer, cell.quantity)[:, cell.index]


# ---------------------------------------------------------------------------------------------------
# Indicator sequences

_WORD = re.compile(r"\w")


def python_lexical_state(text: str) -> dict[str, np.ndarray]:
    """One pass over Python-like source: string, comment, bracket depth, line position, indentation.

    Each value describes the state *after* reading the character, which is what a recurrent cell can
    know: an opening quote is inside the string, the closing quote (the last one of a triple quote)
    is outside. Single, double and triple quotes, backslash escapes are handled (string prefixes f, r, b, … count as
    outside); f-string replacement fields count as inside the string (roughly right). A
    single-quoted string left open at the end of a line ends there. ``#`` starts a comment outside
    strings; the newline ends it. Brackets count outside strings and comments and never go below 0.
    Line position is the column of the character (0-based; a newline gives 0); indentation is the
    leading whitespace of the line read so far, in columns / 4 (tabs to the next multiple of 8).
    """
    n = len(text)
    # Compact types (a long text has one value of each per character): bool flags, int32 counts.
    string = np.zeros(n, dtype=bool)
    triple = np.zeros(n, dtype=bool)  # inside a triple-quoted string
    comment = np.zeros(n, dtype=bool)
    depth = np.zeros(n, dtype=np.int32)
    column = np.zeros(n, dtype=np.int32)
    indent = np.zeros(n, dtype=np.float32)
    quote = ""  # the open string's delimiter, "" when outside a string
    in_comment = False
    level = 0
    col = 0
    ind = 0
    leading = True
    i = 0
    while i < n:
        ch = text[i]
        # --- lexical state
        if quote:
            if ch == "\\" and i + 1 < n:
                string[i:i + 2] = 1
                step = 2
            elif text.startswith(quote, i):
                string[i:i + len(quote) - 1] = 1  # the last closing quote is outside
                step = len(quote)
                quote = ""
            elif ch == "\n" and len(quote) == 1:
                quote = ""  # an unterminated single-quoted string ends with its line
                step = 1
            else:
                string[i] = 1
                step = 1
        elif in_comment:
            if ch == "\n":
                in_comment = False
            else:
                comment[i] = 1
            step = 1
        elif ch == "#":
            in_comment = True
            comment[i] = 1
            step = 1
        elif ch == "'" or ch == '"':
            if text.startswith(ch * 3, i):
                quote = ch * 3
                string[i:i + 3] = 1
                step = 3
            else:
                quote = ch
                string[i] = 1
                step = 1
        else:
            if ch in "([{":
                level += 1
            elif ch in ")]}":
                level = max(0, level - 1)
            step = 1
        if len(quote) == 3 or (step > 1 and string[i] and text.startswith(ch * 3, i)):
            triple[i:i + step] = True
        # --- positional state for every character consumed in this step
        for j in range(i, min(i + step, n)):
            cj = text[j]
            depth[j] = level
            if cj == "\n":
                col, ind, leading = 0, 0, True
                column[j] = 0
                indent[j] = 0
                continue
            column[j] = col
            col += 1
            if leading:
                if cj == " ":
                    ind += 1
                elif cj == "\t":
                    ind = (ind // 8 + 1) * 8
                else:
                    leading = False
            indent[j] = ind / 4
        i += step
    long_string = string & triple
    return {"string": string, "short_string": string & ~triple, "long_string": long_string,
            "comment": comment, "bracket_depth": depth, "line_position": column, "indentation": indent}


def word_starts(text: str) -> np.ndarray:
    """1 at the first character of each word (a run of letters, digits and underscores)."""
    is_word = np.fromiter((bool(_WORD.match(ch)) for ch in text), dtype=bool, count=len(text))
    start = is_word.copy()
    start[1:] &= ~is_word[:-1]
    return start


def regex_matches(text: str, pattern: str) -> np.ndarray:
    """1 on every character inside a match of ``pattern`` (Python ``re`` syntax, MULTILINE)."""
    try:
        compiled = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise InputError(f"bad regular expression {pattern!r}: {exc}") from None
    out = np.zeros(len(text), dtype=bool)
    for m in compiled.finditer(text):
        out[m.start():m.end()] = 1
    return out


INDICATOR_DESCRIPTIONS = {
    "string": ("inside a string literal", True),
    "short_string": ("inside a one-line '…' or \"…\" string", True),
    "long_string": ("inside a triple-quoted string (docstrings)", True),
    "comment": ("inside a comment", True),
    "line_position": ("position in the line", False),
    "indentation": ("indentation depth", False),
    "bracket_depth": ("bracket depth", False),
    "word_start": ("start of a word", True),
}


def indicator_sequences(text: str, regex: str | Sequence[str] | None = None) -> dict[str, Indicator]:
    """The built-in indicators for ``text`` and, for each pattern in ``regex``, ``regex:PATTERN``."""
    lexical = python_lexical_state(text)
    lexical["word_start"] = word_starts(text)
    out = {name: Indicator(name, INDICATOR_DESCRIPTIONS[name][0], lexical[name], INDICATOR_DESCRIPTIONS[name][1])
           for name in INDICATOR_DESCRIPTIONS}
    patterns = [regex] if isinstance(regex, str) else list(regex or [])
    for pattern in patterns:
        name = f"regex:{pattern}"
        out[name] = Indicator(name, f"inside a match of /{pattern}/", regex_matches(text, pattern), True)
    return out


# ---------------------------------------------------------------------------------------------------
# Search by correlation


def _blocks(rep: Replay, quantities: Sequence[str] | None):
    qs = QUANTITIES[rep.cell] if quantities is None else tuple(quantities)
    for q in qs:
        if q not in QUANTITIES[rep.cell]:
            raise InputError(f"no quantity {q!r} in a {rep.cell.upper()}; choose from "
                             f"{', '.join(QUANTITIES[rep.cell])}")
    for layer, values in enumerate(rep.layers):
        for q in qs:
            yield layer, q, values[q]


def auroc_columns(values: np.ndarray, labels: np.ndarray, bins: int = 4096) -> np.ndarray:
    """AUROC of each column of ``values`` (T, K) as a score for the 0/1 ``labels`` (T,).

    AUROC = P(value at a positive > value at a negative) + ½ P(tie) (Mann–Whitney U / (P·N)). All
    columns at once without sorting: each column is binned into ``bins`` equal steps between its
    minimum and maximum and one ``bincount`` gives the positive and negative histograms; values in the
    same bin count as ties, so the result is within about 1/``bins`` of the exact figure.
    """
    values = np.asarray(values, dtype=np.float32)
    T, K = values.shape
    pos = np.asarray(labels) > 0.5
    P = int(pos.sum())
    N = T - P
    if P == 0 or N == 0 or K == 0:
        return np.full(K, np.nan, dtype=np.float64)
    lo = values.min(0)
    span = values.max(0) - lo
    scale = np.where(span > 0, (bins - 1) / np.where(span > 0, span, 1), 0).astype(np.float32)
    key = ((values - lo) * scale).astype(np.int64)
    key += (np.arange(K, dtype=np.int64) * bins)[None, :]
    all_counts = np.bincount(key.ravel(), minlength=K * bins).reshape(K, bins).astype(np.float64)
    pos_counts = np.bincount(key[pos].ravel(), minlength=K * bins).reshape(K, bins).astype(np.float64)
    neg_counts = all_counts - pos_counts
    neg_below = np.cumsum(neg_counts, axis=1) - neg_counts
    return (pos_counts * (neg_below + 0.5 * neg_counts)).sum(1) / (P * N)


def cell_search(rep: Replay, indicators: dict[str, Indicator] | None = None, top: int = 5,
                quantities: Sequence[str] | None = None, auroc_candidates: int = 16,
                rank_by: str = "auto") -> dict[str, list[CellScore]]:
    """Rank every cell against every indicator.

    Pearson r of each cell with each indicator comes from one matrix product per (layer, quantity):
    r = Aᵀ(Y − Ȳ) / (T σ_A σ_Y) for A (T, H) and all K indicators Y (T, K) at once. For on/off
    indicators the ``auroc_candidates`` cells with the largest |r| (the point-biserial correlation) get
    their AUROC (:func:`auroc_columns`) and are ranked by |AUROC − 0.5| — a cell that is off inside
    strings is as telling as one that is on. ``rank_by="r"`` ranks every indicator by |r| (the AUROC is
    still given for on/off ones). Constant cells and constant indicators get r = 0.
    """
    if rank_by not in ("auto", "r"):
        raise InputError(f"rank_by must be 'auto' or 'r', not {rank_by!r}")
    import torch  # noqa: PLC0415 - its float32 matrix product is much faster here than numpy's

    if indicators is None:
        indicators = indicator_sequences(rep.text)
    names = list(indicators)
    T = rep.length
    Y = np.stack([indicators[n].values for n in names], axis=1).astype(np.float64)  # (T, K)
    if Y.shape[0] != T:
        raise InputError("indicator length differs from the text length")
    y_std = Y.std(0)
    # One (K + 1, T) @ (T, H) product per block gives every covariance and every column sum; the
    # second moment is one float32 pass. Columns are shifted by their first value first, so that the
    # variance E[S²] − E[S]² does not cancel for cells that barely move (a gate stuck near −1).
    Y1T = torch.from_numpy(np.ascontiguousarray(
        np.concatenate([(Y - Y.mean(0)).T, np.ones((1, T))]), dtype=np.float32))  # (K + 1, T)
    rs, refs, blocks = [], [], {}
    for layer, q, A in _blocks(rep, quantities):
        S = A - A[:1]
        sums = (Y1T @ torch.from_numpy(S)).double().numpy()  # (K + 1, H)
        mean = sums[-1] / T
        second = np.einsum("ij,ij->j", S, S).astype(np.float64) / T
        std = np.sqrt(np.maximum(second - mean * mean, 0))
        std[std < MIN_STD] = 0.0  # a cell that does not move correlates with nothing
        cov = sums[:-1].T / T  # (H, K): Y is centred, so the shift drops out
        del S
        denom = std[:, None] * y_std[None, :]
        ok = denom > 1e-12
        rs.append(np.clip(np.where(ok, cov / np.where(ok, denom, 1), 0.0), -1, 1))
        blocks[(layer, q)] = A
        refs.extend(CellRef(layer, q, h) for h in range(A.shape[1]))
    R = np.concatenate(rs, axis=0)  # (cells, K)
    results: dict[str, list[CellScore]] = {}
    for k, name in enumerate(names):
        ind = indicators[name]
        order = np.argsort(-np.abs(R[:, k]), kind="stable")
        if not ind.binary or y_std[k] == 0:
            results[name] = [CellScore(refs[j], float(R[j, k]), None, float(abs(R[j, k]))) for j in order[:top]]
            continue
        cand = order[:max(top, auroc_candidates)]
        cols = np.empty((T, len(cand)), dtype=np.float32)
        for (layer, q), A in blocks.items():  # one gather per block, not per cell
            sel = [n for n, j in enumerate(cand) if refs[j].layer == layer and refs[j].quantity == q]
            if sel:
                cols[:, sel] = A[:, [refs[cand[n]].index for n in sel]]
        au = auroc_columns(cols, ind.values)
        best = (np.arange(min(top, len(cand))) if rank_by == "r"
                else np.argsort(-np.abs(au - 0.5), kind="stable")[:top])
        results[name] = [CellScore(refs[cand[j]], float(R[cand[j], k]), float(au[j]), float(abs(au[j] - 0.5)))
                         for j in best]
    return results


# ---------------------------------------------------------------------------------------------------
# The same search for a text of any length, streamed


@dataclass
class StreamedSearch:
    """What :func:`cell_search_steps` returns: the ranking of :func:`cell_search` and the text's figures."""

    search: dict[str, list[CellScore]]
    length: int
    bits_per_char: float


def _moments(values: np.ndarray, step: int = 1 << 20) -> tuple[float, float]:
    """Mean and population standard deviation in float64, a slice at a time (no float64 copy)."""
    n = len(values)
    total = 0.0
    for a in range(0, n, step):
        total += float(values[a:a + step].sum(dtype=np.float64))
    mean = total / n
    sq = 0.0
    for a in range(0, n, step):
        d = values[a:a + step].astype(np.float64) - mean
        sq += float(d @ d)
    return mean, float(np.sqrt(sq / n))


def _label_patterns(indicators: dict[str, Indicator], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every character's combination of the on/off indicators ``names`` as a small dense code (T,) and
    the (patterns, len(names)) table of which indicator each code has on."""
    T = len(next(iter(indicators.values())).values)
    nb = len(names)
    dtype = np.uint8 if nb <= 8 else np.uint16 if nb <= 16 else np.uint32 if nb <= 32 else np.uint64
    code = np.zeros(T, dtype=dtype)  # one small integer a character, not one per indicator
    for bit, name in enumerate(names):
        code |= (np.asarray(indicators[name].values) > 0.5).astype(dtype) << dtype(bit)
    if nb <= 16:  # a lookup table, no sort of the whole text
        present = np.bincount(code, minlength=1 << nb) > 0
        uniq = np.nonzero(present)[0]
        lut = (np.cumsum(present) - 1).astype(np.uint16)
        dense = lut[code]
    else:
        uniq, dense = np.unique(code, return_inverse=True)
    table = (uniq.astype(np.uint64)[:, None] >> np.arange(nb, dtype=np.uint64)[None, :]) & np.uint64(1)
    return dense, table.astype(bool)


class _Histograms:
    """Per-cell histograms of one (layer, quantity) block, one count per bin and label pattern, over
    chunks. A cell's bins are ``bins`` equal steps from ``lo``; the first chunk sets the range (as
    :func:`auroc_columns` does for the whole text) and a value outside it widens the range by a power of
    two whose new bin edges are old ones, so bins merge exactly and no count is lost."""

    def __init__(self, H: int, bins: int, patterns: int):
        self.H, self.bins, self.P = H, bins, patterns
        self.counts = np.zeros((H, patterns, bins), dtype=np.int32)
        self.lo: np.ndarray | None = None
        self.width: np.ndarray | None = None

    def _widen(self, j: int, vmin: float, vmax: float) -> None:
        lo, w, bins = self.lo[j], self.width[j], self.bins
        m = int(np.ceil((lo - vmin) / w)) if vmin < lo else 0
        k = 1  # new edges lo − m·w + i·w·2^k are old ones; every old bin and the new values must fit
        while lo - m * w + bins * w * 2 ** k <= vmax or m + bins > bins * 2 ** k:
            k += 1
        old = self.counts[j].copy()
        new = np.zeros_like(old)
        np.add.at(new.T, (np.arange(bins) + m) // 2 ** k, old.T)
        self.counts[j] = new
        self.lo[j] = lo - m * w
        self.width[j] = w * 2 ** k

    def base(self, pattern: np.ndarray) -> np.ndarray:
        """Offsets of each (character, cell) into the flat counts for the characters' label ``pattern``."""
        return (np.arange(self.H, dtype=np.int64)[None, :] * self.P + pattern[:, None].astype(np.int64)) * self.bins

    def add(self, A: np.ndarray, base: np.ndarray) -> None:
        vmin = A.min(0).astype(np.float64)
        vmax = A.max(0).astype(np.float64)
        if self.lo is None:
            span = vmax - vmin
            self.lo = vmin
            # a constant first chunk gets a small range around its value; later values widen it
            self.width = np.where(span > 0, span / (self.bins - 1),
                                  np.maximum(np.abs(vmin), 1.0) * 1e-7 / self.bins)
        else:
            hi = self.lo + self.bins * self.width
            for j in np.nonzero((vmin < self.lo) | (vmax >= hi))[0]:
                self._widen(int(j), min(vmin[j], self.lo[j]), vmax[j])
        key = A - self.lo.astype(np.float32)  # as auroc_columns bins: (value − lo) · scale, float32
        key *= (1.0 / self.width).astype(np.float32)
        key = key.astype(np.int64)
        np.minimum(key, self.bins - 1, out=key)  # float32 rounding at the edges (np.clip is slower)
        np.maximum(key, 0, out=key)
        key += base
        self.counts += np.bincount(key.ravel(), minlength=self.counts.size).reshape(self.counts.shape)

    def auroc(self, j: int, on: np.ndarray) -> float:
        """AUROC of cell ``j`` for the indicator that is on in patterns ``on`` (bool, (P,))."""
        counts = self.counts[j].astype(np.float64)
        pos = counts[on].sum(0)
        neg = counts[~on].sum(0)
        P, N = pos.sum(), neg.sum()
        if P == 0 or N == 0:
            return float("nan")
        neg_below = np.cumsum(neg) - neg
        return float((pos * (neg_below + 0.5 * neg)).sum() / (P * N))


def search_bytes(model, length: int, quantities: Sequence[str] | None = None, binary_indicators: int = 5,
                 indicators: int = 8, patterns: int = 8, chunk: int = 4096, bins: int = 1024) -> int:
    """Bytes :func:`cell_search_steps` needs at its peak for a text of ``length`` characters: the
    indicators (at most 4 bytes a character each) and the label codes, the histograms (4 bytes per cell,
    bin and label pattern) and the chunks in flight (one worked on, one read ahead) with temporaries."""
    cfg = model.config
    qs = QUANTITIES[cfg.cell] if quantities is None else tuple(quantities)
    cells = len(qs) * cfg.num_layers * cfg.hidden_size
    text_and_indicators = length * (4 + 4 * indicators + 12)  # str (≤ 4 bytes a char), codes, encoding
    hist = cells * bins * patterns * 4 + (cfg.hidden_size * bins * patterns * 8 if binary_indicators else 0)
    # one chunk's replay with its temporaries (×8), plus the next one read ahead and its queue slot (×2)
    per_chunk = chunk * (len(QUANTITIES[cfg.cell]) * cfg.num_layers * cfg.hidden_size * 4 * (8 + 2)
                         + cfg.hidden_size * 8 * 4 + len(model.vocab) * 4 * 2)
    return int(text_and_indicators + (hist if binary_indicators else 0) + per_chunk)


def cell_search_steps(model, text: str, indicators: dict[str, Indicator] | None = None, top: int = 5,
                      quantities: Sequence[str] | None = None, auroc_candidates: int = 16,
                      rank_by: str = "auto", chunk: int = 4096, bins: int = 1024,
                      check_memory: bool = True):
    """:func:`cell_search` for a text of any length, without keeping its gates: yields ``(done, total)``
    characters and returns a :class:`StreamedSearch`. Close it to cancel.

    The text is replayed a chunk at a time (:func:`~explorer.core.rnn.replay.replay_chunks`). Pearson r
    comes from running sums per cell and indicator (Σs, Σs² and Σs·(y − ȳ), float64, s the cell's value
    less its value at the first character, as :func:`cell_search` shifts it); the AUROC from per-cell
    histograms of ``bins`` bins per combination of on/off indicators, summed over chunks. Memory is
    bounded by the histograms and one chunk, not the text: :func:`search_bytes` estimates it, and with
    ``check_memory`` a search that cannot fit is refused before it starts. The ranking is
    :func:`cell_search`'s; on a text within one chunk the two agree (the AUROC to its bin resolution).
    """
    from explorer.core.rnn.memory import check_memory as _check  # noqa: PLC0415
    from explorer.core.rnn.replay import replay_chunks  # noqa: PLC0415
    from explorer.core.steps import read_ahead  # noqa: PLC0415

    if rank_by not in ("auto", "r"):
        raise InputError(f"rank_by must be 'auto' or 'r', not {rank_by!r}")
    if not text:
        raise InputError("the text is empty")
    import torch  # noqa: PLC0415

    cell_type = model.config.cell
    qs = QUANTITIES[cell_type] if quantities is None else tuple(quantities)
    for q in qs:
        if q not in QUANTITIES[cell_type]:
            raise InputError(f"no quantity {q!r} in a {cell_type.upper()}; choose from "
                             f"{', '.join(QUANTITIES[cell_type])}")
    T = len(text)
    if indicators is None:
        indicators = indicator_sequences(text)
    names = list(indicators)
    for name in names:
        if len(indicators[name].values) != T:
            raise InputError("indicator length differs from the text length")
    stats = [_moments(np.asarray(indicators[n].values)) for n in names]
    y_mean = np.array([m for m, _ in stats])
    y_std = np.array([sd for _, sd in stats])
    binary = [n for k, n in enumerate(names) if indicators[n].binary and y_std[k] > 0]
    pattern, table = (_label_patterns(indicators, binary) if binary else (None, np.zeros((1, 0), bool)))
    if check_memory:
        _check(search_bytes(model, T, qs, len(binary), len(names), len(table), chunk, bins),
               f"searching the cells over {T:,} characters")
    L, H = model.config.num_layers, model.config.hidden_size
    K = len(names)
    sums = {(layer, q): np.zeros((K + 1, H)) for layer in range(L) for q in qs}
    second = {key: np.zeros(H) for key in sums}
    shift: dict[tuple[int, str], np.ndarray] = {}
    hists = {key: _Histograms(H, bins, len(table)) for key in sums} if binary else {}
    bits, scored = 0.0, 0
    # The replay (torch, which releases the GIL) runs a chunk ahead in a helper thread while this
    # thread sums and bins the previous chunk (numpy): on two cores the two overlap.
    chunks = read_ahead(replay_chunks(model, text, chunk, qs))
    try:
        for part in chunks:
            a, b = part.start, part.stop
            Yc = np.empty((K + 1, b - a), dtype=np.float32)
            for k, name in enumerate(names):
                Yc[k] = np.asarray(indicators[name].values[a:b], dtype=np.float64) - y_mean[k]
            Yc[K] = 1.0
            Yt = torch.from_numpy(Yc)
            base = next(iter(hists.values())).base(pattern[a:b]) if hists else None
            for layer, arrays in enumerate(part.layers):
                for q, A in arrays.items():
                    key = (layer, q)
                    if key not in shift:
                        shift[key] = A[:1].copy()
                    S = A - shift[key]
                    sums[key] += (Yt @ torch.from_numpy(S)).double().numpy()
                    second[key] += np.einsum("ij,ij->j", S, S).astype(np.float64)
                    del S
                    if hists:
                        hists[key].add(A, base)
            ok = part.targets >= 0
            p = part.probs[np.nonzero(ok)[0], part.targets[ok]]
            bits += float(-np.log2(np.maximum(p, 1e-12)).astype(np.float64).sum())
            scored += int(ok.sum())
            yield b, T
    finally:
        chunks.close()
    rs, refs = [], []
    for (layer, q), sm in sums.items():
        mean = sm[-1] / T
        std = np.sqrt(np.maximum(second[(layer, q)] / T - mean * mean, 0))
        std[std < MIN_STD] = 0.0
        cov = sm[:-1].T / T
        denom = std[:, None] * y_std[None, :]
        ok = denom > 1e-12
        rs.append(np.clip(np.where(ok, cov / np.where(ok, denom, 1), 0.0), -1, 1))
        refs.extend(CellRef(layer, q, h) for h in range(H))
    R = np.concatenate(rs, axis=0)
    results: dict[str, list[CellScore]] = {}
    for k, name in enumerate(names):
        order = np.argsort(-np.abs(R[:, k]), kind="stable")
        if name not in binary:
            results[name] = [CellScore(refs[j], float(R[j, k]), None, float(abs(R[j, k]))) for j in order[:top]]
            continue
        on = table[:, binary.index(name)]
        cand = order[:max(top, auroc_candidates)]
        au = np.array([hists[(refs[j].layer, refs[j].quantity)].auroc(refs[j].index, on) for j in cand])
        best = (np.arange(min(top, len(cand))) if rank_by == "r"
                else np.argsort(-np.abs(au - 0.5), kind="stable")[:top])
        results[name] = [CellScore(refs[cand[j]], float(R[cand[j], k]), float(au[j]), float(abs(au[j] - 0.5)))
                         for j in best]
    return StreamedSearch(results, T, bits / scored if scored else float("nan"))


# ---------------------------------------------------------------------------------------------------
# Search by selection (LSTMVis)


@dataclass(frozen=True)
class SelectionCell:
    cell: CellRef
    on_inside: float  # fraction of selected characters where the cell is above the threshold
    off_around: float  # fraction of the surrounding characters where it is not
    score: float  # on_inside + off_around − 1, in [−1, 1]


@dataclass(frozen=True)
class SelectionResult:
    cells: list[SelectionCell]
    matches: list[tuple[int, int]]  # other [start, end) spans where the chosen cells are on together


def _span_mask(T: int, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(T, dtype=bool)
    for start, end in spans:
        if not (0 <= start < end <= T):
            raise InputError(f"span [{start}, {end}) lies outside the text (length {T})")
        mask[start:end] = True
    return mask


def selection_search(rep: Replay, spans: Sequence[tuple[int, int]], threshold: float = 0.3, margin: int = 10,
                     quantities: Sequence[str] = ("h",), top: int = 10, match_cells: int = 3,
                     min_match_length: int = 2, max_matches: int = 50) -> SelectionResult:
    """Cells on (> ``threshold``) inside the user's ``spans`` and off in the ``margin`` characters
    around them, ranked by on_inside + off_around − 1; then the other places where the best
    ``match_cells`` of them are on together for at least ``min_match_length`` characters.

    ``spans`` are [start, end) character offsets. Strobelt et al. (2018), LSTMVis, §4.
    """
    T = rep.length
    if not spans:
        raise InputError("select at least one span of text")
    inside = _span_mask(T, spans)
    around = np.zeros(T, dtype=bool)
    for start, end in spans:
        around[max(0, start - margin):start] = True
        around[end:min(T, end + margin)] = True
    around &= ~inside
    scores, refs = [], []
    n_out = around.sum()
    for layer, q, A in _blocks(rep, quantities):
        on = A > threshold
        on_in = on[inside].mean(0)
        off_out = 1.0 - on[around].mean(0) if n_out else np.ones(A.shape[1])
        scores.append(np.stack([on_in, off_out], axis=1))
        refs.extend(CellRef(layer, q, h) for h in range(A.shape[1]))
    S = np.concatenate(scores)
    total = S[:, 0] + S[:, 1] - 1.0
    order = np.argsort(-total, kind="stable")[:top]
    cells = [SelectionCell(refs[j], float(S[j, 0]), float(S[j, 1]), float(total[j])) for j in order]
    # Match with the best cells only: those within 80 % of the top score (at most match_cells).
    chosen = [c.cell for c in cells[:match_cells] if cells and c.score >= 0.8 * cells[0].score]
    matches = find_coactivation(rep, chosen, threshold, min_match_length, exclude=inside)[:max_matches]
    return SelectionResult(cells, matches)


def find_coactivation(rep: Replay, cells: Sequence[CellRef], threshold: float, min_length: int = 2,
                      exclude: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Maximal [start, end) runs where every cell in ``cells`` is above ``threshold``, longest first;
    runs that overlap ``exclude`` (the user's own selection) are left out."""
    if not cells:
        return []
    on = np.ones(rep.length, dtype=bool)
    for cell in cells:
        on &= cell_values(rep, cell) > threshold
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    starts = np.nonzero(edges == 1)[0]
    ends = np.nonzero(edges == -1)[0]
    runs = []
    for s, e in zip(starts, ends):
        if e - s < min_length or (exclude is not None and exclude[s:e].any()):
            continue
        runs.append((int(s), int(e)))
    runs.sort(key=lambda se: (-(se[1] - se[0]), se[0]))
    return runs


# ---------------------------------------------------------------------------------------------------
# Everything the explorer shows for one text, as one generator


@dataclass
class TextAnalysis:
    """What :func:`analyse_text_steps` returns. ``replay`` holds every gate of the first
    ``replay.length`` characters (all of them unless the text was too long to keep); ``search`` ranks the
    cells over the whole text of ``length`` characters, and ``indicators`` describe the whole text."""

    replay: Replay
    indicators: dict[str, Indicator]
    search: dict[str, list[CellScore]]
    saturation: dict
    length: int = -1  # characters of the whole text (−1: the replay's length)

    def __post_init__(self) -> None:
        if self.length < 0:
            self.length = self.replay.length

    @property
    def truncated(self) -> bool:
        """True when the gates are kept for a prefix only (the search still covers the whole text)."""
        return self.replay.length < self.length


ANALYSIS_MAX_BYTES = 4_000_000_000  # what analyse_text_steps may hold at most (and 80 % of free memory)
MIN_KEPT_CHARS = 1000  # a text whose first 1000 characters' gates do not fit is refused


def analysis_bytes(model, length: int) -> int:
    """Bytes :func:`analyse_text_steps` needs for ``length`` characters: the whole replay (every
    quantity of every layer, float32) plus the search's per-block copies and the indicators."""
    from explorer.core.rnn.replay import replay_bytes  # noqa: PLC0415

    return replay_bytes(model, length) + length * (8 * model.config.hidden_size + 64) + 100_000_000


def kept_characters(model, length: int, max_bytes: int | None = ANALYSIS_MAX_BYTES) -> int:
    """How many of ``length`` characters :func:`analyse_text_steps` can keep every gate of: all of
    them when they fit in ``max_bytes`` and 80 % of the free memory, else the longest prefix that does."""
    from explorer.core.rnn import memory  # noqa: PLC0415

    free = memory.available_bytes()
    room = min(0.8 * free if free is not None else float("inf"), max_bytes or float("inf"))
    if analysis_bytes(model, length) <= room:
        return length
    per_char = (analysis_bytes(model, 1_000_000) - analysis_bytes(model, 0)) / 1_000_000
    return max(0, min(length, int((room - analysis_bytes(model, 0)) / per_char)))


def analyse_text_steps(model, text: str, regex: Sequence[str] | None = None, top: int = 5,
                       search: bool = True, max_bytes: int | None = ANALYSIS_MAX_BYTES):
    """Replay ``text`` and search its cells: yields ``(done, total)`` while reading and returns the
    :class:`TextAnalysis`. Close it to cancel (between chunks of 8192 characters).

    Everything is kept for every character (the explorer shows any cell at any character), about
    4 bytes × layers × quantities × hidden size per character (9.2 KB for the bundled 2×192 LSTM). A
    text whose analysis would need more than ``max_bytes`` or 80 % of the free memory is still read
    to its end: the gates are kept for the longest prefix that fits (:func:`kept_characters`) and the
    cells are ranked over the whole text by the streamed :func:`cell_search_steps` (memory bounded by
    its histograms and a chunk). Only a text whose first :data:`MIN_KEPT_CHARS` characters do not fit
    is refused before anything is allocated (:class:`~explorer.core.rnn.memory.NotEnoughMemory`).
    """
    from explorer.core.rnn import memory  # noqa: PLC0415
    from explorer.core.rnn.replay import gate_saturation, replay_steps  # noqa: PLC0415
    from explorer.core.steps import map_yields  # noqa: PLC0415

    T = len(text)
    kept = kept_characters(model, T, max_bytes)
    if kept < min(T, MIN_KEPT_CHARS):
        try:
            memory.check_memory(analysis_bytes(model, T),
                                f"analysing {T:,} characters with every gate of every step kept",
                                limit=max_bytes)
        except memory.NotEnoughMemory as exc:
            raise memory.NotEnoughMemory(
                f"{exc}; about {kept:,} characters fit, and the command line's cell search reads texts of "
                f"any length", exc.needed, exc.available) from None
    if kept == T:
        rep = yield from replay_steps(model, text)
        indicators = indicator_sequences(text, regex) if search else {}
        results = cell_search(rep, indicators, top=top) if search and T > 2 else {}
        return TextAnalysis(rep, indicators, results, gate_saturation(rep))
    # Too long to keep: the gates of a prefix for the view, the streamed search over all of it.
    total = kept + T if search else kept
    rep = yield from map_yields(replay_steps(model, text[:kept]), lambda step: (step[0], total))
    indicators = indicator_sequences(text, regex) if search else {}
    results = {}
    if search:
        found = yield from map_yields(cell_search_steps(model, text, indicators, top=top),
                                      lambda step: (kept + step[0], total))
        results = found.search
    return TextAnalysis(rep, indicators, results, gate_saturation(rep), length=T)
