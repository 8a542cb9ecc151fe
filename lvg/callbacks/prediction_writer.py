"""Write ``lvg predict`` results: one mp4 per prompt-suite job."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from lvg.media import write_video

log = logging.getLogger(__name__)


class VideoPredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<job id>.mp4`` as each batch finishes (atomically; nothing half-written).

    Existing videos are kept (and reported) unless ``overwrite``, so a rerun of a suite never
    destroys earlier results.
    """

    def __init__(self, output_dir: str = "outputs/predict", overwrite: bool = False):
        """
        Args:
            output_dir: where the videos go.
            overwrite: replace videos that already exist.
        """
        super().__init__(write_interval="batch")
        self.output_dir, self.overwrite = Path(output_dir), overwrite

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for job_id, video in zip(prediction["id"], prediction["videos"]):
            path = self.output_dir / f"{job_id}.mp4"
            if path.exists() and not self.overwrite:
                log.warning("%s exists; kept (set overwrite to replace it)", path)
                continue
            write_video(path, video.numpy(), prediction["fps"])
