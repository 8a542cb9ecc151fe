"""Prompt schedules: timestamped prompts for long videos.

Syntax: a plain prompt, or prompts each preceded by a timestamp in brackets, seconds or
minutes:seconds::

    [0s] a red circle drifts left [12s] the circle hides behind the pillar [1:05] it comes back

A bracket that opens the prompt or holds a digit is a timestamp and must be one: ``[12s]``,
``[12.5 s]``, ``[65]`` or ``[1:05]`` (seconds below 60 after the colon), never negative. Brackets
around other words (``a sign reading [OPEN]``) are prompt text.

A section takes the prompt active at its first frame. On a change only the text conditioning of
the backbone switches; SemanticPack's psi keeps what it memorised (it was seeded from the first
prompt and has since been updated from the video itself), so identities persist across prompts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_STAMP = re.compile(r"\[\s*(?:(\d+):)?(\d+(?:\.\d*)?)\s*s?\s*\]")
_NEGATIVE = re.compile(r"\[\s*-\s*[\d.:]+\s*s?\s*\]")


def _seconds(token: str) -> float:
    """The time a ``[...]`` timestamp stands for; a ValueError saying how to write it otherwise."""
    if _NEGATIVE.fullmatch(token):
        raise ValueError(f"Prompt schedule: timestamp {token} is negative; times count from the start of the video.")
    m = _STAMP.fullmatch(token)
    if m is None:
        raise ValueError(
            f"Prompt schedule: {token} is not a timestamp; write seconds ('[12s]', '[12.5s]') or minutes:seconds "
            "('[1:05]'). A bracket that opens the prompt or holds a digit is read as a timestamp."
        )
    minutes, seconds = m.group(1), float(m.group(2))
    if minutes is not None and seconds >= 60:
        total = 60 * int(minutes) + seconds
        raise ValueError(f"Prompt schedule: {token}: the seconds after the colon must be below 60; "
                         f"write [{int(total // 60)}:{total % 60:02g}] or [{total:g}s].")
    return seconds + 60 * int(minutes or 0)


@dataclass(frozen=True)
class PromptSchedule:
    """``(start seconds, prompt)`` entries, the first at 0 s, strictly increasing."""

    entries: tuple[tuple[float, str], ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("A prompt schedule needs at least one prompt.")
        if self.entries[0][0] != 0:
            raise ValueError(f"The first prompt must start at 0s, got {self.entries[0][0]}s.")
        for (t0, _), (t1, _) in zip(self.entries, self.entries[1:]):
            if t1 <= t0:
                raise ValueError(f"Prompt timestamps must increase: {t1}s follows {t0}s.")
        for t, prompt in self.entries:
            if not prompt.strip():
                raise ValueError(f"The prompt at {t}s is empty; every section needs a description.")

    @classmethod
    def parse(cls, text: str) -> PromptSchedule:
        """Parse a plain prompt or a ``[0s] ... [12s] ...`` schedule."""
        stamps = [m for m in _BRACKETS.finditer(text)
                  if not text[: m.start()].strip() or any(c.isdigit() for c in m.group())]
        if not stamps:
            return cls(((0.0, text.strip()),))
        if text[: stamps[0].start()].strip():
            raise ValueError(
                f"Prompt schedule {text[:60]!r}: text before the first timestamp; start with '[0s]'."
            )
        entries = []
        for i, m in enumerate(stamps):
            end = stamps[i + 1].start() if i + 1 < len(stamps) else len(text)
            entries.append((_seconds(m.group()), text[m.end() : end].strip()))
        return cls(tuple(entries))

    def at(self, seconds: float) -> str:
        """The prompt active at ``seconds``."""
        return self.entries[self._index_at(seconds)][1]

    def _index_at(self, seconds: float) -> int:
        return max(i for i, (t, _) in enumerate(self.entries) if t <= seconds + 1e-9)

    def unused(self, section_starts: Sequence[float]) -> list[str]:
        """Why each prompt that no section starts under is never shown (a section takes the prompt
        active at its first frame, at ``section_starts`` seconds); empty when every prompt is used."""
        used = {self._index_at(t) for t in section_starts}
        reasons = []
        for i, (t, prompt) in enumerate(self.entries):
            if i in used:
                continue
            if t > section_starts[-1]:
                why = f"the last section starts at {section_starts[-1]:.2f}s"
            else:
                why = f"the prompt at {self.entries[i + 1][0]:g}s replaces it before a section starts"
            reasons.append(f"the prompt at {t:g}s ({prompt[:40]!r}) is never used: {why}.")
        return reasons
