"""Stage 1: Teacher Forcing with MemoryPack -- every section is conditioned on ground-truth history."""

from lvg.training.base import StageModule


class TeacherForcingModule(StageModule):
    """Flow-matching loss per section; history and psi updates come from the ground-truth video.

    Trains the whole model by default (``trainable: all``), or the subset ``trainable`` names.
    """
