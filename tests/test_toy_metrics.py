"""Toy-world truth metrics that cannot be fooled: reference videos without the scene's structure score ~0.

Every truth comes with four reference videos: uniform noise (fixed seed), the start frame's mean colour
repeated, the start frame frozen, and the ground truth itself. The table below is what each reference
must score; the structure scores (identity, background, occluder) tell noise and flat colour from the
truth, the drift scores (relative: a video against itself) cannot and are recorded as such. The memory
world's long / short recovery get the same four rows, and videos where the sprite returns as another.
"""

import dataclasses

import numpy as np
import pytest
import torch

from lvg.data.toy_world import BACKGROUNDS, COLOURS, PILLAR_RGB, SHAPES, ToyWorldConfig, render_video, sample_video_spec
from lvg.metrics.drift import segment_length
from lvg.metrics.toy_world import LABELLED, ToyWorldTruth

CONFIGS = [
    (ToyWorldConfig(num_videos=4, min_seconds=4.0, max_seconds=5.0), range(4)),
    (ToyWorldConfig(num_videos=2, min_seconds=3.0, max_seconds=4.0, size=48, max_sprites=4, seed=3), range(2)),
]
STRUCTURE = ("identity_consistency", "background_stability", "occluder_persistence")


def _scenes():
    return [(config, index, *render_video(sample_video_spec(config, index))) for config, indices in CONFIGS
            for index in indices]


def references(frames: np.ndarray, seed: int) -> dict[str, torch.Tensor]:
    """The four reference videos of a rendered ``(T, S, S, 3)`` uint8 video."""
    video = torch.from_numpy(frames)
    generator = torch.Generator().manual_seed(seed)
    mean = video[:1].float().mean(dim=(1, 2), keepdim=True).round().to(torch.uint8)  # (1, 1, 1, 3)
    return {
        "noise": torch.randint(0, 256, video.shape, generator=generator, dtype=torch.uint8),
        "mean_colour": mean.expand(video.shape).contiguous(),
        "frozen": video[:1].expand(video.shape).contiguous(),
        "ground_truth": video,
    }


@pytest.fixture(scope="module")
def scenes():
    return _scenes()


@pytest.fixture(scope="module")
def scores(scenes):
    """``{reference: [(values, truth, frames) per scene]}``."""
    metric, out = ToyWorldTruth(), {}
    for seed, (_, _, frames, truth) in enumerate(scenes):
        for name, video in references(frames, seed).items():
            out.setdefault(name, []).append((metric.video_values(video, truth, truth["fps"]), truth, frames))
    return out


# (reference, score, lowest, highest) over every scene; recovery is checked separately (often undefined).
TABLE = [
    *[(ref, score, 0.0, 0.1) for ref in ("noise", "mean_colour") for score in STRUCTURE],
    *[("ground_truth", score, 0.95, 1.0) for score in STRUCTURE],
    ("frozen", "background_stability", 1.0, 1.0),  # the start frame's field, exactly
    ("frozen", "occluder_persistence", 1.0, 1.0),  # the start frame's pillar, exactly
    ("frozen", "identity_consistency", 0.5, 1.0),  # == the sprites identified in frame 0 (next test)
    *[(ref, drift, 0.0, 0.0) for ref in ("frozen", "mean_colour") for drift in ("colour_drift", "contrast_drift")],
    # Drift compares a video with itself: stationary noise drifts as little as the truth (it cannot
    # be told from it by drift, which is why the structure scores above exist).
    ("noise", "colour_drift", 0.0, 3.0),
    ("noise", "contrast_drift", 0.0, 3.0),
]


def truth_identity(truth: dict) -> float:
    """Identity by the truth's own visibility labels: start sprites visible somewhere in the last 15 %."""
    n = segment_length(truth["num_frames"], 1)
    start = [s for s in truth["sprites"] if s["visible"][0]]
    return sum(any(s["visible"][-n:]) for s in start) / len(start)


@pytest.mark.parametrize(("reference", "score", "low", "high"), TABLE)
def test_reference_scores(scores, reference, score, low, high):
    rows = scores[reference]
    if (reference, score) == ("ground_truth", "identity_consistency"):
        # A wandering sprite may end behind the pillar in the truth itself: there the metric equals the
        # truth's labels (below); the bound is for the scenes whose start sprites all end visible.
        for values, truth, _ in rows:
            assert values[score] == pytest.approx(truth_identity(truth))
        rows = [row for row in rows if truth_identity(row[1]) == 1.0]
        assert len(rows) >= 3
    values = [v[score] for v, _, _ in rows]
    assert all(v is not None for v in values), values
    assert low - 1e-9 <= min(values) and max(values) <= high + 1e-9, values


def test_recovery_is_defined_only_where_sprites_come_back(scores):
    assert all(v["occlusion_recovery"] == 1.0 for v, _, _ in scores["ground_truth"])  # every scripted return
    for reference in ("noise", "mean_colour", "frozen"):  # never identified / never gone
        assert all(v["occlusion_recovery"] is None for v, _, _ in scores[reference]), reference


def test_frozen_identity_is_what_the_start_frame_shows(scores):
    """A frozen start frame keeps exactly the sprites identified in frame 0 (a start sprite cut by the frame
    edge or half behind the pillar may be 'visible' in the truth but not have its own shape's IoU)."""
    metric = ToyWorldTruth()
    for values, truth, frames in scores["frozen"]:
        start = [k for k, s in enumerate(truth["sprites"]) if s["visible"][0]]
        tracks = metric.tracks(torch.from_numpy(frames[:1]).float(), truth)
        assert values["identity_consistency"] == pytest.approx(float(tracks.identified[start, 0].double().mean()))


def test_every_rendered_frame_scores_one(scenes):
    """The per-frame background and pillar scores are exactly 1 on every frame the renderer draws, so the
    ground truth's 1.0 is no average hiding failures; the (T, 3, H, W) float layout scores the same."""
    metric = ToyWorldTruth()
    for _, _, frames, truth in scenes:
        video = torch.from_numpy(frames).float()
        assert torch.all(metric.field_scores(video, truth) == 1.0)
        assert torch.all(metric.pillar_scores(video, truth) == 1.0)
        values = metric.video_values(video.permute(0, 3, 1, 2), truth, truth["fps"])
        assert values == metric.video_values(torch.from_numpy(frames), truth, truth["fps"])


def test_section_curves_use_the_same_definitions(scenes):
    metric = ToyWorldTruth()
    _, _, frames, truth = scenes[0]
    refs = references(frames, seed=0)
    for name, video in refs.items():
        curves = metric.section_values(video, truth, frames_per_section=8)
        assert len(curves["background"]) == (len(frames) - 1) // 8
        for key in ("background", "occluder"):
            if name in ("noise", "mean_colour"):
                assert max(curves[key]) <= 0.1, (name, key, curves[key])
            else:
                assert min(curves[key]) == 1.0, (name, key, curves[key])


def test_lookalikes_of_the_field_and_the_pillar_fail(scenes):
    """Colour right, structure wrong: noise along the background's ramp, the flat base colour, flat pillar
    grey; and a real field with the pillar gone (the field stays, the pillar does not)."""
    metric = ToyWorldTruth()
    config, index, frames, truth = scenes[0]
    shape, generator = frames.shape, torch.Generator().manual_seed(1)
    base = torch.tensor(BACKGROUNDS[truth["background"]], dtype=torch.float32)
    ramp_noise = ((0.6 + 0.4 * torch.rand(shape[:3], generator=generator))[..., None] * base).round()
    flat_base = base.expand(shape).clone()
    flat_grey = torch.tensor(PILLAR_RGB, dtype=torch.float32).expand(shape).clone()
    for video in (ramp_noise, flat_base, flat_grey):
        values = metric.video_values(video, truth, truth["fps"])
        assert values["background_stability"] <= 0.1 and values["occluder_persistence"] <= 0.1, values
    no_pillar, _ = render_video(dataclasses.replace(sample_video_spec(config, index), occluder=None))
    values = metric.video_values(torch.from_numpy(no_pillar), truth, truth["fps"])
    assert values["occluder_persistence"] <= 0.1 and values["background_stability"] == 1.0
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(frames).float().permute(0, 3, 1, 2), 5, 1, 2,
                                             count_include_pad=False).permute(0, 2, 3, 1)
    assert metric.video_values(blurred, truth, truth["fps"])["occluder_persistence"] <= 0.1  # no sharp edge


def test_identity_tells_shapes_apart(scenes):
    """Every sprite redrawn with every other shape: the bare IoU bar (>= 0.5) accepted >99 % of its wholly visible
    frames, so identity ignored shape; with the best fit among the shapes none of them is recognised, and only
    those where the blob touches the pillar, the border or another sprite (where it may be cut) are still
    identified (measured: 20 %). Every wholly visible frame of the truth is identified."""
    metric = ToyWorldTruth()
    truth_frames = swapped = identified = recognised = 0
    for config, index, frames, truth in scenes:
        spec = sample_video_spec(config, index)
        tracks = metric.tracks(torch.from_numpy(frames).float(), truth)
        for k, sprite in enumerate(truth["sprites"]):
            whole = torch.tensor(sprite["visible_fraction"]) == 1.0
            assert bool(tracks.identified[k, whole].all())
            truth_frames += int(whole.sum())
            for shape in SHAPES:
                if shape == sprite["shape"]:
                    continue
                other = dataclasses.replace(spec, sprites=[dataclasses.replace(s, shape=shape) if j == k else s
                                                           for j, s in enumerate(spec.sprites)])
                video, drawn = render_video(other)
                other_tracks = metric.tracks(torch.from_numpy(video).float(), truth)
                whole = torch.tensor(drawn["sprites"][k]["visible_fraction"]) == 1.0
                swapped += int(whole.sum())
                identified += int(other_tracks.identified[k, whole].sum())
                recognised += int(other_tracks.recognised[k, whole].sum())
    assert truth_frames > 100 and swapped > 500
    assert recognised == 0 and identified < 0.3 * swapped, (identified, swapped)


def test_without_a_pillar_the_occluder_is_undefined(scenes):
    config, index, _, _ = scenes[0]
    frames, truth = render_video(dataclasses.replace(sample_video_spec(config, index), occluder=None))
    values = ToyWorldTruth().video_values(torch.from_numpy(frames), truth, truth["fps"])
    assert values["occluder_persistence"] is None and values["background_stability"] == 1.0


# --- the memory world: long_recovery and its short-absence control --------------------------------------------

MEMORY_CONFIGS = [
    (ToyWorldConfig.memory(), range(16)),
    (ToyWorldConfig.memory(num_videos=2, size=48, max_sprites=4, seed=3), range(2)),
    (ToyWorldConfig.memory(num_videos=2, occluder=False, seed=5), range(2)),
]
RECOVERY = ("long_recovery", "short_recovery")


@pytest.fixture(scope="module")
def memory_scenes():
    return [(config, index, *render_video(sample_video_spec(config, index))) for config, indices in MEMORY_CONFIGS
            for index in indices]


@pytest.fixture(scope="module")
def memory_scores(memory_scenes):
    metric, out = ToyWorldTruth(), {}
    for seed, (_, _, frames, truth) in enumerate(memory_scenes):
        for name, video in references(frames, seed).items():
            out.setdefault(name, []).append(metric.video_values(video, truth, truth["fps"]))
    return out


# The sprite that hides is not in the start frame, so a frozen start frame never shows it again: 0, like noise
# and the flat mean colour; the truth brings it back after every absence. The other scores read as on the
# default world (its wanderers start and end in view, so the truth scores 1 on identity too).
MEMORY_TABLE = [
    *[(ref, score, 0.0, 0.0) for ref in ("noise", "mean_colour", "frozen") for score in RECOVERY],
    *[("ground_truth", score, 1.0, 1.0) for score in RECOVERY],
    *[(ref, score, 0.0, 0.1) for ref in ("noise", "mean_colour") for score in STRUCTURE],
    *[("ground_truth", score, 1.0, 1.0) for score in (*STRUCTURE, "occlusion_recovery")],
    ("frozen", "background_stability", 1.0, 1.0),
    ("frozen", "occluder_persistence", 1.0, 1.0),
]


@pytest.mark.parametrize(("reference", "score", "low", "high"), MEMORY_TABLE)
def test_memory_reference_scores(memory_scores, reference, score, low, high):
    values = [v[score] for v in memory_scores[reference]]
    if score in ("occluder_persistence", "occlusion_recovery"):
        values = [v for v in values if v is not None]  # scenes without a pillar / where no start sprite hides
    assert len(values) >= 4 and all(v is not None for v in values), values
    assert low - 1e-9 <= min(values) and max(values) <= high + 1e-9, values


def test_labelled_scores_need_labels(scores, memory_scenes):
    """Default-world truths label no absences: the scores are missing per video and overall (no empty report
    columns), where the memory world's are defined."""
    assert all(not LABELLED & v.keys() for v, _, _ in scores["ground_truth"])
    default, memory = ToyWorldTruth(), ToyWorldTruth()
    for _, truth, frames in scores["ground_truth"][:2]:
        default.update([torch.from_numpy(frames)], [truth], fps=truth["fps"])
    assert not LABELLED & default.compute().keys()
    for _, _, frames, truth in memory_scenes[:2]:
        memory.update([torch.from_numpy(frames)], [truth], fps=truth["fps"])
    assert {k: float(v) for k, v in memory.compute().items() if k in LABELLED} == dict.fromkeys(LABELLED, 1.0)


def _returns_as(config, index, frames, truth, **changes):
    """The video with its returning sprite redrawn with ``changes`` (identity or keyframes) from the moment it
    starts its long absence: the same video up to there, another sprite back afterwards."""
    spec = sample_video_spec(config, index)
    long = next(a for a in truth["absences"] if a["kind"] == "long")
    k = long["sprite"]
    other = dataclasses.replace(spec, sprites=[dataclasses.replace(s, **changes) if j == k else s
                                               for j, s in enumerate(spec.sprites)])
    changed, _ = render_video(other)
    cut = long["hidden"][0]
    return torch.from_numpy(np.concatenate([frames[:cut], changed[cut:]]))


def test_long_recovery_catches_a_sprite_that_returns_as_another(memory_scenes):
    """Another colour or any other shape after the long absence: long recovery 0, while the short absence
    before it still recovers (1). Returning elsewhere, as itself, still counts; never returning does not."""
    metric = ToyWorldTruth()
    for config, index, frames, truth in memory_scenes:
        long = next(a for a in truth["absences"] if a["kind"] == "long")
        sprite = sample_video_spec(config, index).sprites[long["sprite"]]
        used = {s["colour"] for s in truth["sprites"]}
        swaps = [{"colour": next(c for c in COLOURS if c not in used)},
                 *[{"shape": shape} for shape in SHAPES if shape != sprite.shape]]
        for identity in swaps:
            video = _returns_as(config, index, frames, truth, **identity)
            values = metric.video_values(video, truth, truth["fps"])
            assert (values["long_recovery"], values["short_recovery"]) == (0.0, 1.0), (truth["id"], identity)

        size = truth["size"]
        keys = sprite.keyframes
        mirrored = keys[:-2] + [(t, x, size - 1 - y) for t, x, y in keys[-2:]]  # comes back at another height
        video = _returns_as(config, index, frames, truth, keyframes=mirrored)
        assert metric.video_values(video, truth, truth["fps"])["long_recovery"] == 1.0
        gone = keys[:-2] + [(t, *keys[-3][1:]) for t, _, _ in keys[-2:]]  # stays hidden to the end
        video = _returns_as(config, index, frames, truth, keyframes=gone)
        assert metric.video_values(video, truth, truth["fps"])["long_recovery"] == 0.0


def test_recovery_counts_only_returns_inside_the_video(memory_scenes):
    """A generated video that ends before the truth's long return cannot be scored on it."""
    _, _, frames, truth = memory_scenes[0]
    long = next(a for a in truth["absences"] if a["kind"] == "long")
    values = ToyWorldTruth().video_values(torch.from_numpy(frames[:long["back"][0]]), truth, truth["fps"])
    assert values["long_recovery"] is None and values["short_recovery"] == 1.0
