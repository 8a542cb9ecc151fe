"""Lightning callbacks that plug in from YAML (``trainer.callbacks``)."""

from lvg.callbacks.benchmark import BenchmarkReport
from lvg.callbacks.prediction_writer import VideoPredictionWriter
from lvg.callbacks.video_logger import SampleVideoLogger

__all__ = ["BenchmarkReport", "SampleVideoLogger", "VideoPredictionWriter"]
