"""The ablation runner (benchmarks/toy_ablation.py) end to end on its tiny setting: every arm trains, tests and
lands in the JSON with intervals, and a rerun redoes only what is missing."""

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def toy_ablation(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the runner's step timer is a callback named by class path
    import toy_ablation

    return toy_ablation


def test_every_arm_lands_in_the_json_with_intervals_and_a_rerun_resumes(toy_ablation, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ablation"
    summary = toy_ablation.main(["--quick", "--tiny", "--output", str(out)])
    assert (out / "ablation.json").is_file() and (out / "ablation.md").is_file()
    assert set(summary["arms"]) == {arm.name for arm in toy_ablation.ARMS}
    for name, arm in summary["arms"].items():
        assert set(arm["seeds"]) == {"0"}, name
        assert arm["step_time_s"]["median"] > 0
        assert arm["step_time_s"]["lo"] <= arm["step_time_s"]["median"] <= arm["step_time_s"]["hi"]
        for metric in ("toy_world/identity_consistency", "toy_world/background_stability", "toy_world/colour_drift"):
            stat = arm["metrics"][metric]
            assert stat["lo"] <= stat["mean"] <= stat["hi"], (name, metric, stat)
        assert "toy_world/long_recovery" in arm["metrics"]
    questions = {(c["a"], c["b"], c["metric"]) for c in summary["comparisons"]}
    assert ("MemoryPack", "F1", "toy_world/long_recovery") in questions
    assert ("Student Forcing", "All", "step_time") in questions
    table = (out / "ablation.md").read_text()
    assert all(f"| {arm.name} |" in table for arm in toy_ablation.ARMS) and "comes from continuations" in table
    # lvg test scored continuations: two per held-out video, their prefixes left out, each its own recovery
    report = json.loads((out / "runs" / "MemoryPack" / "seed0" / "benchmark" / "report.json").read_text())
    videos = report["videos"]
    assert [v["group"] for v in videos] == ["long_absence"] * 2 + ["short_absence"] * 2
    assert all(0 < v["prefix_frames"] < v["frames"] for v in videos)
    assert all((v["metrics"]["toy_world/long_recovery"] is None) == (v["group"] == "short_absence") for v in videos)
    assert all((v["metrics"]["toy_world/short_recovery"] is None) == (v["group"] == "long_absence") for v in videos)
    assert summary["plots"] and all(Path(p).is_file() for p in summary["plots"])

    results = {arm.slug: out / "runs" / arm.slug / "seed0" / "result.json" for arm in toy_ablation.ARMS}
    before = {slug: path.stat().st_mtime_ns for slug, path in results.items()}
    results["fusion-C"].unlink()
    capsys.readouterr()
    toy_ablation.main(["--quick", "--tiny", "--output", str(out)])
    log = capsys.readouterr().err
    assert "fusion C seed 0: training and testing" in log and log.count("training and testing") == 1
    assert all(results[slug].stat().st_mtime_ns == t for slug, t in before.items() if slug != "fusion-C")
    assert results["fusion-C"].is_file()
