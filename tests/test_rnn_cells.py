"""Indicator sequences on hand-written snippets; correlation/AUROC search; LSTMVis selection search."""
from __future__ import annotations

import numpy as np
import pytest
from rnn_fixtures import QUOTE_TEXT, planted_quote_model, random_char_rnn

from explorer.core.errors import InputError
from explorer.core.rnn.replay import replay
from explorer.core.rnn.cells import (CellRef, auroc_columns, cell_search, cell_values, find_coactivation,
                                     indicator_sequences, parse_cell_ref, python_lexical_state, regex_matches,
                                     selection_search, word_starts)


def _marks(text: str, values: np.ndarray) -> str:
    return "".join("^" if v else "." for v in values)


def test_string_indicator_on_quotes_escapes_and_comments():
    text = 'x = "a#b"  # it\'s "no"\n'
    s = python_lexical_state(text)
    assert _marks(text, s["string"]) == "....^^^^.............." + "."
    assert _marks(text, s["comment"]) == "...........^^^^^^^^^^^" + "."


def test_string_indicator_single_quotes_and_escapes():
    text = "a = 'it\\'s' + b"
    s = python_lexical_state(text)["string"]
    assert _marks(text, s) == "....^^^^^^....."


def test_string_indicator_triple_quotes_span_lines():
    text = 'd = """one\n"two"\n"""\nx'
    s = python_lexical_state(text)["string"]
    # the opening triple quote is inside, the last closing quote is outside
    assert _marks(text, s) == "...." + "^" * 15 + "..."
    assert s[text.index("x")] == 0 and s[text.rindex('"')] == 0 and s[text.rindex('"') - 1] == 1


def test_short_and_long_strings_split_the_string_indicator():
    text = 'a = "x" + """doc\n  s"""\nb'
    s = python_lexical_state(text)
    assert _marks(text, s["short_string"]) == "....^^" + "." * (len(text) - 6)
    long_start = text.index('"""')
    assert _marks(text, s["long_string"]) == "." * long_start + "^" * 12 + "..."
    np.testing.assert_array_equal(s["string"], s["short_string"] + s["long_string"])


def test_fstring_and_unterminated_string():
    text = 'f"{x}" ok\n"open\ny'
    s = python_lexical_state(text)["string"]
    assert _marks(text, s) == ".^^^^.....^^^^^.."


def test_bracket_depth_ignores_strings_and_comments():
    text = 'f(a[1], "(", {2}) # (\n'
    d = python_lexical_state(text)["bracket_depth"]
    assert d[text.index("(")] == 1 and d[text.index("[") ] == 2 and d[text.index("]")] == 1
    assert d[text.index('"(') + 1] == 1  # the ( inside the string does not count
    assert d[text.index("{")] == 2 and d[text.index(")")] == 0
    assert d[-2] == 0  # the ( in the comment does not count


def test_line_position_and_indentation():
    text = "def f():\n    if x:\n\treturn 1\n"
    s = python_lexical_state(text)
    assert s["line_position"][:9].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    line2 = text.index("if")
    assert s["line_position"][line2] == 4
    # indentation: leading whitespace read so far, in columns / 4
    assert s["indentation"][9:13].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert s["indentation"][line2 + 3] == 1.0
    assert s["indentation"][text.index("\t")] == 2.0 and s["indentation"][text.index("return")] == 2.0
    assert s["indentation"][text.index("def")] == 0


def test_word_starts_and_regex():
    text = "foo_bar(x1, 2y)"
    assert _marks(text, word_starts(text)) == "^.......^...^.."
    assert _marks(text, regex_matches(text, r"\d")) == "proof"[:0] + ".........^..^.."
    with pytest.raises(InputError, match="bad regular expression"):
        regex_matches(text, "(")


def test_indicator_set_includes_user_regex():
    ind = indicator_sequences("a = 1\n", regex=[r"\d"])
    assert {"string", "short_string", "long_string", "comment", "line_position", "indentation",
            "bracket_depth", "word_start", r"regex:\d"} == set(ind)
    assert ind["string"].binary and not ind["indentation"].binary


def test_auroc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    values = np.stack([rng.normal(size=300) + labels * 0.8, np.round(rng.normal(size=300), 1),
                       np.where(labels, 1.0, 0.0), -labels.astype(float)], axis=1).astype(np.float32)
    got = auroc_columns(values, labels)
    for k in range(values.shape[1]):
        pos, neg = values[labels, k], values[~labels, k]
        diff = pos[:, None] - neg[None, :]
        exact = (diff > 0).mean() + 0.5 * (diff == 0).mean()
        assert got[k] == pytest.approx(exact, abs=2e-3)
    assert got[2] == pytest.approx(1.0) and got[3] == pytest.approx(0.0)


def test_pearson_r_matches_numpy():
    model = random_char_rnn("lstm", layers=2, hidden=8)
    text = QUOTE_TEXT * 4
    rep = replay(model, text)
    ind = indicator_sequences(text)
    res = cell_search(rep, ind, top=200)
    for name in ("line_position", "string"):
        for score in res[name][:10]:
            expected = np.corrcoef(cell_values(rep, score.cell), ind[name].values)[0, 1]
            assert score.r == pytest.approx(expected, abs=1e-4)


def test_search_finds_the_planted_quote_cell():
    model = planted_quote_model()
    text = QUOTE_TEXT * 4
    rep = replay(model, text)
    c = rep.layers[0]["c"][:, 0]
    inside = indicator_sequences(text)["string"].values
    assert c[inside == 1].min() > 0.9 and c[inside == 0][10:].max() < -0.9  # the plant works as designed
    res = cell_search(rep, top=3)
    best = res["string"][0]
    assert best.cell.index == 0 and best.cell.layer == 0 and best.cell.quantity in ("c", "h")
    assert best.r > 0.95 and best.auroc > 0.99
    by_r = cell_search(rep, top=3, rank_by="r")["string"]
    assert by_r[0].cell.index == 0 and abs(by_r[0].r) >= abs(by_r[1].r)


def test_selection_search_ranks_the_planted_cell_and_finds_other_strings():
    model = planted_quote_model()
    text = QUOTE_TEXT
    rep = replay(model, text)
    start = text.index('"hello')
    result = selection_search(rep, [(start, start + 12)], threshold=0.3, margin=5, quantities=("h",),
                              match_cells=1)
    assert result.cells[0].cell == CellRef(0, "h", 0)
    assert result.cells[0].on_inside == 1.0 and result.cells[0].off_around == 1.0
    found = {text[s:e] for s, e in result.matches}
    assert '"bar baz' in found and '"abc' in found and '"end' in found
    assert not any(s <= start < e for s, e in result.matches)  # the user's own span is left out


def test_find_coactivation_requires_all_cells():
    model = planted_quote_model()
    rep = replay(model, QUOTE_TEXT)
    a = find_coactivation(rep, [CellRef(0, "h", 0)], 0.3)
    both = find_coactivation(rep, [CellRef(0, "h", 0), CellRef(0, "o", 0)], 0.3)
    assert a and both == a  # o is always on in the plant
    assert find_coactivation(rep, [CellRef(0, "h", 0), CellRef(0, "i", 0)], 0.3, min_length=2) == []


def test_cell_refs_are_parsed_and_checked():
    rep = replay(random_char_rnn("lstm", layers=2, hidden=8), "abc")
    assert parse_cell_ref("1:c:7", rep) == CellRef(1, "c", 7)
    for bad in ("1:c", "x:c:1", "2:c:0", "0:z:0", "0:c:8"):
        with pytest.raises(InputError):
            parse_cell_ref(bad, rep)
    with pytest.raises(InputError):
        selection_search(rep, [(2, 9)])


def test_nearly_constant_cells_do_not_correlate():
    """A gate stuck at −1 (float32 noise only) must get r ≈ 0, not ±1 from cancellation."""
    from explorer.core.rnn.replay import Replay
    rng = np.random.default_rng(0)
    T = 50_000
    text = ("x = 'ab'  # c\n" * (T // 14 + 1))[:T]
    stuck = (-1.0 + rng.normal(scale=1e-7, size=(T, 1))).astype(np.float32)
    wide = rng.normal(size=(T, 1)).astype(np.float32) + 5000.0  # a large mean must not matter either
    tracks = indicator_sequences(text)["line_position"].values[:, None] * 0.01 + 300.0
    h = np.concatenate([stuck, wide, tracks.astype(np.float32)], axis=1)
    rep = Replay(text, "rnn", [{"h": h}], np.zeros((T, 2), np.float32), np.zeros(T, np.int64))
    res = cell_search(rep, top=3)
    r = {s.cell.index: s.r for s in res["line_position"]}
    assert abs(r[0]) < 0.05 and abs(r[1]) < 0.05 and r[2] > 0.999
