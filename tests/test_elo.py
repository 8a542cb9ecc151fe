from __future__ import annotations

import json

import pytest

from lvg.metrics.elo import PreferenceError, elo_ratings, read_preferences

GAMES = [("A", "B", "a"), ("A", "B", "a"), ("C", "D", "tie"), ("B", "C", "b")]


def test_hand_computed_example():
    # Game 1, A (1000) beats B (1000): E_A = 1 / (1 + 10^0) = 0.5, delta = 32 * (1 - 0.5) = 16 -> A 1016, B 984.
    # Game 2, A (1016) beats B (984): E_A = 1 / (1 + 10^(-32/400)) = 1 / (1 + 0.8317638) = 0.5459219,
    #   delta = 32 * (1 - 0.5459219) = 14.530498 -> A 1030.530498, B 969.469502.
    # Game 3, C (1000) ties D (1000): E_C = 0.5, S_C = 0.5 -> no change.
    # Game 4, B (969.469502) loses to C (1000): E_B = 1 / (1 + 10^(30.530498/400)) = 1 / (1 + 1.1921372) = 0.4561758,
    #   delta_B = 32 * (0 - 0.4561758) = -14.597626 -> B 954.871876, C 1014.597626.
    rows = elo_ratings(GAMES)
    by = {r["model"]: r for r in rows}
    assert by["A"]["rating"] == pytest.approx(1030.530498, abs=1e-5)
    assert by["B"]["rating"] == pytest.approx(954.871876, abs=1e-5)
    assert by["C"]["rating"] == pytest.approx(1014.597626, abs=1e-5)
    assert by["D"]["rating"] == 1000.0
    assert [r["model"] for r in rows] == ["A", "C", "D", "B"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert (by["B"]["games"], by["B"]["wins"], by["B"]["losses"], by["B"]["ties"]) == (3, 0, 3, 0)
    assert (by["C"]["games"], by["C"]["wins"], by["C"]["losses"], by["C"]["ties"]) == (2, 1, 0, 1)
    assert by["A"]["order"] == "given"
    assert sum(r["rating"] for r in rows) == pytest.approx(4000.0)  # zero-sum updates


def test_k_and_initial():
    rows = elo_ratings([("x", "y", "b")], k=10, initial=1500)
    assert {r["model"]: r["rating"] for r in rows} == {"y": 1505.0, "x": 1495.0}


def test_order_matters_and_shuffles_are_deterministic():
    games = [("A", "B", "a")] * 3 + [("A", "B", "b")] * 3
    forward = {r["model"]: r["rating"] for r in elo_ratings(games)}
    backward = {r["model"]: r["rating"] for r in elo_ratings(games[::-1])}
    assert forward["A"] != pytest.approx(backward["A"])  # ELO is order dependent
    first = elo_ratings(games, shuffles=20, seed=3)
    assert first == elo_ratings(games, shuffles=20, seed=3)
    assert first != elo_ratings(games, shuffles=20, seed=4)
    assert first[0]["order"] == "mean of 20 shuffles (seed 3)"
    assert sum(r["rating"] for r in first) == pytest.approx(2000.0)


def test_read_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "prefs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"a": a, "b": b, "winner": w}) for a, b, w in GAMES) + "\n\n")
    assert read_preferences(jsonl) == GAMES
    csv_path = tmp_path / "prefs.csv"
    csv_path.write_text("a,b,winner,rater\n" + "".join(f"{a},{b},{w},r1\n" for a, b, w in GAMES))
    assert read_preferences(csv_path) == GAMES


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": "A", "b": "B", "winner": "a"}\n{"a": "A", "b": "B"}\n', r"prefs\.jsonl:2: expected an object"),
    ('{"a": "A", "b": "B", "winner": "c"}\n', r"prefs\.jsonl:1: 'winner' must be one of"),
    ('{"a": "A", "b": "A", "winner": "a"}\n', r"prefs\.jsonl:1: a model cannot play itself"),
    ("\n{not json\n", r"prefs\.jsonl:2: not valid JSON"),
])
def test_bad_jsonl(tmp_path, text, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text(text)
    with pytest.raises(PreferenceError, match=message):
        read_preferences(path)


def test_bad_csv(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text("a,b,result\nA,B,a\n")
    with pytest.raises(PreferenceError, match=r"prefs\.csv:1: CSV header must contain a,b,winner"):
        read_preferences(path)
    path.write_text("a,b,winner\nA,B,a\nA,B,draw\n")
    with pytest.raises(PreferenceError, match=r"prefs\.csv:3: 'winner' must be one of"):
        read_preferences(path)
