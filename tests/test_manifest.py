"""Manifests: the validator lists every bad row; Mira and Sekai metadata import into the canonical form."""

import csv
import json

import pytest

from lvg.data.importers import import_mira, import_sekai, read_table
from lvg.data.manifest import ManifestError, read_manifest, read_records, validate_manifest, write_manifest


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_validator_lists_every_bad_row_with_line_and_field(tmp_path):
    good = {"id": "a", "video": "a.mp4", "caption": "a cat", "structured_caption": {"camera": "static"},
            "start": 0.5, "end": 2, "fps": 30, "num_frames": 60, "source": "kept as is"}
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        good,
        {"id": "b", "video": "b.mp4"},                                   # 2: caption missing
        "{not json",                                                       # 3
        {"id": "c", "video": "https://x.org/c.mp4", "caption": "c"},      # 4: URL
        {"id": "d", "video": "d.mp4", "caption": "d", "fps": "30", "num_frames": 2.5},  # 5: two wrong types
        {"id": "a", "video": "a2.mp4", "caption": "dup"},                 # 6: duplicate id
        {"id": 7, "video": "e.mp4", "caption": "e"},                      # 7: id not a string
        {"id": "f", "video": "f.mp4", "caption": "f", "start": 3, "end": 1},  # 8: end <= start
        {"id": "../g", "video": "g.mp4", "caption": "g", "structured_caption": "camera pans"},  # 9: two problems
        "[1, 2]",                                                          # 10: not an object
        "",                                                                # blank lines are skipped
    ])
    report = validate_manifest(manifest)
    assert [r["id"] for r in report.rows] == ["a"]
    row = report.rows[0]
    assert row["video_path"] == str(tmp_path / "a.mp4") and row["where"] == f"{manifest}:1"
    assert row["source"] == "kept as is"  # unknown fields survive
    found = [(issue.where.rsplit(":", 1)[1], issue.field) for issue in report.issues]
    assert found == [
        ("2", "caption"), ("3", None), ("4", "video"), ("5", "fps"), ("5", "num_frames"), ("6", "id"), ("7", "id"),
        ("8", "end"), ("9", "id"), ("9", "structured_caption"), ("10", None),
    ]
    text = str(report)
    assert "1 valid rows, 11 problems" in text and f"{manifest}:6: duplicate id 'a'" in text
    assert "is a URL" in text and "'fps' must be a number > 0, got '30'" in text
    with pytest.raises(ManifestError, match=r"m.jsonl:2: missing required field 'caption'.*10 more"):
        read_manifest(manifest)


def test_write_manifest_round_trips_without_derived_keys(tmp_path):
    rows = [{"id": "x", "video": "v/x.mp4", "caption": "ünïcode caption", "structured_caption": {"style": "noir"}}]
    path = write_manifest(tmp_path / "out" / "m.jsonl", rows)
    back = read_manifest(path)
    assert back[0]["video_path"] == str(tmp_path / "out" / "v" / "x.mp4")
    write_manifest(path, back)  # video_path / where are not written back
    assert json.loads(path.read_text()) == rows[0]


def test_read_records_still_serves_prompt_suites(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"id": "j", "image": "i.png", "prompt": "p"}])
    assert [r["image_path"] for _, r in read_records(path, "Suite", ("id", "image", "prompt"), "image")] == [
        str(tmp_path / "i.png")]
    write_jsonl(path, [{"id": "j", "image": "i.png"}])
    with pytest.raises(ValueError, match=r"s.jsonl:1: missing required field 'prompt'"):
        list(read_records(path, "Suite", ("id", "image", "prompt"), "image"))


MIRA_COLUMNS = ["clip_id", "source", "video_url", "video_id", "width", "height", "fps", "seconds", "timestamp",
                "frame_number", "framestamp", "file_path", "short_caption", "dense_caption", "background_caption",
                "main_object_caption", "style_caption", "camera_caption"]


def mira_row(clip_id, **over):
    row = {"clip_id": clip_id, "source": "youtube_game", "video_url": "https://www.youtube.com/watch?v=abc",
           "video_id": "abc", "width": "1280", "height": "720", "fps": "30.0", "seconds": "62.5",
           "timestamp": "['0:00:01.000', '0:01:03.500']", "frame_number": "1875", "framestamp": "[30, 1905]",
           "file_path": f"game/{clip_id}.mp4", "short_caption": "A knight rides.",
           "dense_caption": "A knight in silver armour rides a horse through a burning village.",
           "background_caption": "A village at dusk.", "main_object_caption": "A knight on a horse.",
           "style_caption": "Realistic, cinematic.", "camera_caption": "The camera follows from behind."}
    row.update(over)
    return row


def test_import_mira_csv_maps_captions_numbers_and_keeps_the_rest(tmp_path):
    meta = tmp_path / "meta" / "mira.csv"
    meta.parent.mkdir()
    with meta.open("w", newline="") as f:
        writer = csv.DictWriter(f, MIRA_COLUMNS)
        writer.writeheader()
        writer.writerow(mira_row("1.0"))
        writer.writerow(mira_row("1.1", dense_caption="", camera_caption=""))  # falls back to the short caption
        writer.writerow(mira_row("1.2", dense_caption="", short_caption=""))  # no caption: skipped
        writer.writerow(mira_row("1.3", fps="thirty"))  # not a number: skipped
        writer.writerow(mira_row("1.0"))  # duplicate: skipped
    out = tmp_path / "manifests" / "mira.jsonl"
    report = import_mira(meta, out, root=tmp_path / "clips")
    assert report.written == 2
    assert [(i.where.rsplit(":", 1)[1], "no caption" in i.message or "not a number" in i.message
             or "duplicate" in i.message) for i in report.skipped] == [("4", True), ("5", True), ("6", True)]
    rows = read_manifest(out)
    first = rows[0]
    assert first["id"] == "1.0" and first["video"] == "../clips/game/1.0.mp4"
    assert first["video_path"] == str(out.parent / "../clips/game/1.0.mp4")
    assert first["caption"].startswith("A knight in silver armour")
    assert first["structured_caption"] == {
        "main_object": "A knight on a horse.", "background": "A village at dusk.",
        "camera": "The camera follows from behind.", "style": "Realistic, cinematic.", "short": "A knight rides."}
    assert (first["fps"], first["num_frames"], first["width"], first["height"], first["seconds"]) == (
        30.0, 1875, 1280, 720, 62.5)
    assert first["video_url"].startswith("https://") and first["framestamp"] == "[30, 1905]"
    assert rows[1]["caption"] == "A knight rides." and "camera" not in rows[1]["structured_caption"]
    with pytest.raises(ManifestError, match=r"mira.csv:4: skipped: no caption"):
        import_mira(meta, out, root=tmp_path / "clips", strict=True)


def test_import_mira_json_with_another_caption_column(tmp_path):
    meta = tmp_path / "mira.json"
    meta.write_text(json.dumps([mira_row("9.1", fps=24, width=640, height=360, frame_number=100)]))
    import_mira(meta, tmp_path / "m.jsonl", caption="short_caption")
    (row,) = read_manifest(tmp_path / "m.jsonl")
    assert row["caption"] == "A knight rides." and row["fps"] == 24.0 and row["num_frames"] == 100
    assert row["video"] == "game/9.1.mp4"  # relative to the meta file's directory by default


SEKAI_COLUMNS = ["videoFile", "cameraFile", "caption", "location", "scene", "crowdDensity", "weather", "timeOfDay"]


def test_import_sekai_csv_and_jsonl(tmp_path):
    meta = tmp_path / "sekai-real-walking-hq.csv"
    rows = [
        ["-2kQ_aBc9xY_0000300_0002100.mp4", "-2kQ_aBc9xY_0000300_0002100.txt",
         "Walking along a canal lined with bikes.", "Amsterdam, Netherlands", "street", "medium", "cloudy", "day"],
        ["zz_1_2.mp4", "", "", "Tokyo", "", "", "", ""],  # no caption: skipped
    ]
    with meta.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SEKAI_COLUMNS)
        writer.writerows(rows)
    out = tmp_path / "sekai.jsonl"
    report = import_sekai(meta, out, root=tmp_path / "clips")
    assert report.written == 1 and len(report.skipped) == 1 and report.skipped[0].where.endswith(":3")
    (row,) = read_manifest(out)
    assert row["id"] == "-2kQ_aBc9xY_0000300_0002100"
    assert row["video"] == "clips/-2kQ_aBc9xY_0000300_0002100.mp4"
    assert row["caption"] == "Walking along a canal lined with bikes."
    assert row["structured_caption"] == {"location": "Amsterdam, Netherlands", "scene": "street", "weather": "cloudy",
                                         "crowd_density": "medium", "time_of_day": "day"}
    assert row["camera_file"] == "-2kQ_aBc9xY_0000300_0002100.txt"
    assert row["source_video"] == "-2kQ_aBc9xY" and row["source_frames"] == [300, 2100]

    jsonl = write_jsonl(tmp_path / "game.jsonl", [
        {"videoFile": "game_0001.mp4", "caption": "A drone flies over a lake.", "scene": "lake", "extra": 1},
        "{broken",
    ])
    report = import_sekai(jsonl, tmp_path / "game_manifest.jsonl")
    assert report.written == 1 and "not valid JSON" in report.skipped[0].message
    (row,) = read_manifest(tmp_path / "game_manifest.jsonl")
    assert row["structured_caption"] == {"scene": "lake"} and row["extra"] == 1 and "source_video" not in row


def test_read_table_refuses_unknown_types_and_missing_files(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"x")
    with pytest.raises(ManifestError, match="unsupported type '.parquet'"):
        read_table(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="No usable row"):
        import_sekai(write_jsonl(tmp_path / "e.jsonl", [{"caption": "no file"}]), tmp_path / "o.jsonl")


def test_prepare_cli_imports_and_validates(tmp_path, capsys):
    from lvg.cli.tools import prepare_main

    meta = tmp_path / "mira.json"
    meta.write_text(json.dumps([mira_row("3.3")]))
    prepare_main(["import-mira", str(meta), str(tmp_path / "m.jsonl"), "--root", str(tmp_path / "clips")])
    assert "1 rows written, 0 skipped" in capsys.readouterr().out
    (tmp_path / "clips/game").mkdir(parents=True)
    (tmp_path / "clips/game/3.3.mp4").write_bytes(b"\0")
    prepare_main(["--manifest", str(tmp_path / "m.jsonl"), "--validate_only"])
    assert "1 valid rows, 0 problems" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "video": "a.mp4"}, {"id": "b", "video": 3, "caption": "x"}])
    with pytest.raises(ValueError, match="2 problems"):
        prepare_main(["--manifest", str(bad), "--validate-only"])
    out = capsys.readouterr().out
    assert "bad.jsonl:1: missing required field 'caption'" in out and "bad.jsonl:2: 'video' must be" in out
    files = write_jsonl(tmp_path / "files.jsonl", [{"id": "a", "video": "clips/game/3.3.mp4", "caption": "x"},
                                                   {"id": "b", "video": "nope.mp4", "caption": "x"}])
    with pytest.raises(ValueError, match="1 problems"):
        prepare_main(["--manifest", str(files), "--validate_only"])
    assert f"files.jsonl:2: 'video' file {tmp_path / 'nope.mp4'} does not exist" in capsys.readouterr().out
    assert [r["id"] for r in validate_manifest(files).rows] == ["a", "b"]  # files are checked only when asked
