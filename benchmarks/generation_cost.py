"""Long-generation cost: per-section time and peak memory stay flat over 64 sections (toy preset).

Generates sections with LongVideoPipeline, streaming decoded frames into an mp4 as the real
``lvg generate`` does, and reports the time of section 64 / section 2 (target <= 1.05), peak RSS
after 64 sections / after 8 (target <= 1.10) and sections per second.

    python benchmarks/generation_cost.py [--sections 64] [--steps 25]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from lvg.config import DiTConfig
from lvg.media import VideoWriter
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders, PixelCodec, ToyImageEncoder, ToyTextEncoder
from lvg.models.memory_pack import MemoryPackConfig
from lvg.models.semantic_pack import SemanticPack, SemanticPackConfig
from lvg.prompts import PromptSchedule
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig, SectionDecoder


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = DiTConfig.from_name("toy")
    dit = PackedDiT(cfg).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.02)
    sp = SemanticPack(SemanticPackConfig(dim=128, num_heads=4, memory_grid=(4, 4)), cfg).eval()
    encoders = Encoders(PixelCodec(2), ToyTextEncoder(64), ToyImageEncoder(), frame_size=(32, 32))
    pipe = LongVideoPipeline(dit, MemoryPackConfig(window=9, rope_time_mode="absolute"), encoders, sp,
                             SamplingConfig(steps=args.steps))
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    schedule = PromptSchedule.parse("[0s] a red circle and a blue square [30s] the square hides behind the pillar")
    state = pipe.start_state(image, [schedule.at(0)])
    times, rss = [], {}
    decoder = SectionDecoder(encoders.codec, 9)
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "bench.mp4", 8.0) as writer:
        writer.write(decoder.start(state.start)[0])
        start = time.perf_counter()
        for n, latents in pipe.sections(state, [schedule], args.sections, seed=0, fps=8.0):
            writer.write(decoder.add(latents)[0])
            now = time.perf_counter()
            times.append(now - start)
            start = now
            rss[n + 1] = peak_rss_mib()
    total = sum(times)
    last = args.sections
    print(json.dumps({
        "benchmark": "generation_cost",
        "preset": "toy",
        "sections": last,
        "steps_per_section": args.steps,
        "section_s": {"2": times[1], "8": times[7], str(last): times[-1]},
        f"time_section{last}_over_section2": times[-1] / times[1],
        "time_last8_over_sections2to9": sum(times[-8:]) / sum(times[1:9]),
        "peak_rss_mib": {"8": rss[8], str(last): rss[last]},
        f"peak_rss_section{last}_over_section8": rss[last] / rss[8],
        "sections_per_s": last / total,
    }, indent=2))


if __name__ == "__main__":
    main()
