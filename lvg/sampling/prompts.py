"""Prompt schedules: timestamped prompts for long videos.

Syntax: a plain prompt, or prompts each preceded by a timestamp in brackets, seconds or
minutes:seconds::

    [0s] a red circle drifts left [12s] the circle hides behind the pillar [1:05] it comes back

A section takes the prompt active at its first frame. On a change only the text conditioning of
the backbone switches; SemanticPack's psi keeps what it memorised (it was seeded from the first
prompt and has since been updated from the video itself), so identities persist across prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STAMP = re.compile(r"\[\s*(?:(\d+):)?(\d+(?:\.\d*)?)\s*s?\s*\]")


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
        stamps = list(_STAMP.finditer(text))
        if not stamps:
            return cls(((0.0, text.strip()),))
        if text[: stamps[0].start()].strip():
            raise ValueError(
                f"Prompt schedule {text[:60]!r}: text before the first timestamp; start with '[0s]'."
            )
        entries = []
        for i, m in enumerate(stamps):
            seconds = float(m.group(2)) + 60 * int(m.group(1) or 0)
            end = stamps[i + 1].start() if i + 1 < len(stamps) else len(text)
            entries.append((seconds, text[m.end() : end].strip()))
        return cls(tuple(entries))

    def at(self, seconds: float) -> str:
        """The prompt active at ``seconds``."""
        return [p for t, p in self.entries if t <= seconds + 1e-9][-1]
