"""Training stages (LightningModules) sharing one section loop."""

from lvg.training.base import StageModule
from lvg.training.direct_forcing import DirectForcingModule
from lvg.training.student_forcing import StudentForcingModule
from lvg.training.teacher_forcing import TeacherForcingModule

__all__ = ["DirectForcingModule", "StageModule", "StudentForcingModule", "TeacherForcingModule"]
