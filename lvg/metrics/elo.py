"""Human evaluation: ELO ratings from pairwise A/B preferences.

Preferences are read from JSONL (one ``{"a": model, "b": model, "winner": "a" | "b" | "tie"}`` per line)
or CSV (header ``a,b,winner``). Every model starts at ``initial``; each game moves both ratings by
``k * (S_A - E_A)`` with ``E_A = 1 / (1 + 10^((R_B - R_A) / 400))`` and ``S_A`` = 1 / 0.5 / 0 for win / tie / loss.

ELO depends on the order of games, so the result is made deterministic: with ``shuffles=0`` the games are
played in the given (file) order; with ``shuffles=n`` the reported rating is the mean over ``n`` permutations
drawn from ``random.Random(seed)``. The returned rows say which (``"order"``).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WINNERS = ("a", "b", "tie")


class PreferenceError(ValueError):
    """A preferences file is malformed (the message names ``file:line``)."""


def _game(where: str, a: Any, b: Any, winner: Any) -> tuple[str, str, str]:
    if not isinstance(a, str) or not a or not isinstance(b, str) or not b:
        raise PreferenceError(f"{where}: 'a' and 'b' must be non-empty model names, got a={a!r}, b={b!r}")
    if a == b:
        raise PreferenceError(f"{where}: a model cannot play itself ({a!r})")
    winner = winner.strip().lower() if isinstance(winner, str) else winner
    if winner not in WINNERS:
        raise PreferenceError(f"{where}: 'winner' must be one of {WINNERS}, got {winner!r}")
    return a, b, winner


def read_preferences(path: str | Path) -> list[tuple[str, str, str]]:
    """Read pairwise preferences as ``(a, b, winner)`` tuples in file order.

    Args:
        path: ``.jsonl`` file (one JSON object per line, blank lines skipped) or ``.csv`` file with a header
            containing ``a,b,winner`` (extra columns ignored).

    Returns:
        Games ``(model_a, model_b, winner)`` with ``winner`` in ``{"a", "b", "tie"}``.

    Raises:
        PreferenceError: a line is not valid JSON/CSV, misses a field, or has an unknown winner.
    """
    path = Path(path)
    games: list[tuple[str, str, str]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"a", "b", "winner"} - set(reader.fieldnames or ())
            if missing:
                raise PreferenceError(f"{path}:1: CSV header must contain a,b,winner (missing {sorted(missing)})")
            for row in reader:
                games.append(_game(f"{path}:{reader.line_num}", row["a"], row["b"], row["winner"]))
        return games
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PreferenceError(f"{where}: not valid JSON ({e.msg}); expected {{\"a\", \"b\", \"winner\"}}") from e
        if not isinstance(record, dict) or not {"a", "b", "winner"} <= record.keys():
            raise PreferenceError(f"{where}: expected an object with keys 'a', 'b', 'winner', got {line.strip()!r}")
        games.append(_game(where, record["a"], record["b"], record["winner"]))
    return games


def _play(games: Sequence[tuple[str, str, str]], models: Sequence[str], k: float, initial: float) -> dict[str, float]:
    rating = dict.fromkeys(models, initial)
    for a, b, winner in games:
        expected_a = 1.0 / (1.0 + 10.0 ** ((rating[b] - rating[a]) / 400.0))
        score_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[winner]
        delta = k * (score_a - expected_a)
        rating[a] += delta
        rating[b] -= delta  # E_B = 1 - E_A and S_B = 1 - S_A: zero-sum update
    return rating


def elo_ratings(games: Sequence[tuple[str, str, str]], k: float = 32.0, initial: float = 1000.0, shuffles: int = 0,
                seed: int = 0) -> list[dict[str, Any]]:
    """ELO rating, rank and record of every model.

    Args:
        games: ``(model_a, model_b, winner)`` tuples, ``winner`` in ``{"a", "b", "tie"}``.
        k: ELO K-factor (the paper uses 32).
        initial: Starting rating of every model.
        shuffles: 0 plays the games in the given order; ``n > 0`` averages the final ratings over ``n``
            permutations of the games drawn from ``random.Random(seed)``.
        seed: Seed of the permutations (ignored when ``shuffles=0``).

    Returns:
        One dict per model sorted by rank (1 = best; ties in rating share the order of first appearance):
        ``model, rating, rank, games, wins, losses, ties, order`` where ``order`` is ``"given"`` or
        ``"mean of n shuffles (seed s)"``.
    """
    if shuffles < 0:
        raise ValueError(f"shuffles must be >= 0, got {shuffles}")
    games = [_game(f"game {i}", *g) for i, g in enumerate(games)]
    models = list(dict.fromkeys(m for a, b, _ in games for m in (a, b)))
    if shuffles == 0:
        rating = _play(games, models, k, initial)
        order = "given"
    else:
        rng = random.Random(seed)
        rating = dict.fromkeys(models, 0.0)
        for _ in range(shuffles):
            for m, r in _play(rng.sample(games, len(games)), models, k, initial).items():
                rating[m] += r / shuffles
        order = f"mean of {shuffles} shuffles (seed {seed})"
    record = {m: {"games": 0, "wins": 0, "losses": 0, "ties": 0} for m in models}
    for a, b, winner in games:
        record[a]["games"] += 1
        record[b]["games"] += 1
        if winner == "tie":
            record[a]["ties"] += 1
            record[b]["ties"] += 1
        else:
            won, lost = (a, b) if winner == "a" else (b, a)
            record[won]["wins"] += 1
            record[lost]["losses"] += 1
    ranked = sorted(models, key=lambda m: -rating[m])  # stable: equal ratings keep first-appearance order
    return [{"model": m, "rating": rating[m], "rank": i, **record[m], "order": order}
            for i, m in enumerate(ranked, start=1)]
