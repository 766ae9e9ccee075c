"""Annotation files read as the releases ship them; malformed lines named by file and line."""

import json

import pytest
from data_fixtures import SSV2_CLASSES, write_k400, write_ssv1, write_ssv2

from tdsclip.data.annotations import (
    AnnotationError,
    read_class_names,
    read_kinetics,
    read_rawframe_list,
    read_ssv1,
    read_ssv2,
    read_video_list,
    ssv2_class_name,
)


def test_ssv2_class_is_the_template_without_brackets(tmp_path):
    assert ssv2_class_name("Putting [something] on [something]") == "Putting something on something"
    files = write_ssv2(tmp_path)
    ann = read_ssv2(files["train"], files["labels"], files["root"], allow_unlabelled=False)
    assert ann.classes == SSV2_CLASSES
    assert [r.label for r in ann.records] == [0, 1, 2, 3]
    assert ann.records[0].path == str(files["root"] / "100.webm")
    assert all(r.kind == "video" for r in ann.records)


def test_ssv2_test_split_is_unlabelled_only_when_allowed(tmp_path):
    files = write_ssv2(tmp_path)
    ann = read_ssv2(files["test"], files["labels"], files["root"], allow_unlabelled=True)
    assert [r.label for r in ann.records] == [-1, -1]
    with pytest.raises(AnnotationError, match=r"test-split only|test split only"):
        read_ssv2(files["test"], files["labels"], files["root"], allow_unlabelled=False)


def test_ssv2_unknown_template_names_file_and_line(tmp_path):
    files = write_ssv2(tmp_path)
    entries = json.loads(files["train"].read_text())
    entries[2]["template"] = "Juggling [something]"
    files["train"].write_text(json.dumps(entries, indent=1))
    with pytest.raises(AnnotationError) as err:
        read_ssv2(files["train"], files["labels"], files["root"], allow_unlabelled=False)
    # the error points at the line where the third entry starts
    text = files["train"].read_text().splitlines()
    entry_starts = [number for number, t in enumerate(text, start=1) if t == " {"]
    assert (err.value.file, err.value.line) == (str(files["train"]), entry_starts[2])
    assert "Juggling something" in str(err.value)


def test_ssv2_broken_json_names_line(tmp_path):
    files = write_ssv2(tmp_path)
    files["val"].write_text(
        '[\n {"id": "100", "template": "Putting [something] on [something]"},\n'
        ' {"id": 101 "template"}\n]'
    )
    with pytest.raises(AnnotationError, match=r"validation\.json:3: invalid JSON"):
        read_ssv2(files["val"], files["labels"], files["root"], allow_unlabelled=False)


def test_ssv1_csv_and_labels_order(tmp_path):
    files = write_ssv1(tmp_path)
    ann = read_ssv1(files["train"], files["labels"], files["root"])
    assert ann.classes[0] == "Turning the camera right while filming something"
    assert [(r.path, r.label, r.kind) for r in ann.records] == [
        (str(files["root"] / "1"), 1, "frames"),
        (str(files["root"] / "2"), 2, "frames"),
        (str(files["root"] / "3"), 0, "frames"),
    ]
    files["val"].write_text(f"2;{ann.classes[1]}\n\n7 {ann.classes[1]}\n")
    with pytest.raises(AnnotationError, match=r"validation\.csv:3: expected `<id>;<class name>`"):
        read_ssv1(files["val"], files["labels"], files["root"])
    files["val"].write_text("2;Dancing\n")
    with pytest.raises(AnnotationError, match=r"validation\.csv:1: unknown class 'Dancing'"):
        read_ssv1(files["val"], files["labels"], files["root"])


def test_kinetics_nested_files_and_class_order(tmp_path):
    files = write_k400(tmp_path)
    train = read_kinetics(
        files["train"], files["root"], labels_file=None, train_ann_file=files["train"]
    )
    assert train.classes == ["abseiling", "air drumming", "zumba"]  # sorted train labels
    paths = [r.path for r in train.records]
    assert paths[0].endswith("train/zumba/bbb_000000_000010.mp4")
    assert paths[1].endswith("train/abseiling/aaa_000010_000020.mp4")
    assert paths[2] == str(files["root"] / "missing1_000003_000013.mp4")  # missing: expected path
    assert [r.label for r in train.records] == [2, 0, 1]
    val = read_kinetics(
        files["val"], files["root"], labels_file=None, train_ann_file=files["train"]
    )
    assert [r.label for r in val.records] == [2]
    labels = tmp_path / "k400_labels.csv"
    labels.write_text("id,name\n0,zumba\n1,air drumming\n2,abseiling\n")
    val = read_kinetics(
        files["val"], files["root"], labels_file=labels, train_ann_file=files["train"]
    )
    assert val.classes == ["zumba", "air drumming", "abseiling"] and val.records[0].label == 0


def test_kinetics_malformed_rows(tmp_path):
    files = write_k400(tmp_path)
    header = "label,youtube_id,time_start,time_end,split\n"
    files["val"].write_text(header + "zumba,ccc,5,15,val\nzumba,ddd,five,15,val\n")
    with pytest.raises(AnnotationError, match=r"validate\.csv:3: time_start must be an integer"):
        read_kinetics(files["val"], files["root"], labels_file=None, train_ann_file=files["train"])
    files["val"].write_text(header + "salsa,ccc,5,15,val\n")
    with pytest.raises(AnnotationError, match=r"validate\.csv:2: unknown class 'salsa'"):
        read_kinetics(files["val"], files["root"], labels_file=None, train_ann_file=files["train"])
    files["val"].write_text("youtube_id,label\nccc,zumba\n")
    with pytest.raises(AnnotationError, match=r"validate\.csv:1: expected the header"):
        read_kinetics(files["val"], files["root"], labels_file=None, train_ann_file=files["train"])


def test_generic_lists(tmp_path):
    ann = tmp_path / "train.txt"
    ann.write_text("a/clip 1.mp4 1\nb/clip2.webm 0\n")
    out = read_video_list(ann, tmp_path, ["x", "y"])
    assert [(r.path, r.label) for r in out.records] == [
        (str(tmp_path / "a/clip 1.mp4"), 1),
        (str(tmp_path / "b/clip2.webm"), 0),
    ]
    assert read_video_list(ann, tmp_path, None).classes == ["0", "1"]
    frames = tmp_path / "frames.txt"
    frames.write_text("v/one 12 0\nv/two 3 1\n")
    out = read_rawframe_list(frames, tmp_path, ["x", "y"])
    assert [(r.num_frames, r.kind) for r in out.records] == [(12, "frames"), (3, "frames")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.mp4 0\nb.mp4\n", r"train\.txt:2: expected `<video path> <label>`"),
        ("a.mp4 0\n\nb.mp4 x\n", r"train\.txt:3: label must be an integer, got 'x'"),
        ("a.mp4 2\n", r"train\.txt:1: label 2 must be in \[0, 2\)"),
        ("\n\n", r"train\.txt: no entries"),
        # mmaction2 multi_class lines: an error naming the line, never "video.mp4 0" as a path
        ("a.mp4 1\nvideo.mp4 0 3\n", r"train\.txt:2: 3 columns.*2 labels \(0 3\).*multi_class"),
        ("my clip 7 1 2\n", r"train\.txt:1: 4 columns.*3 labels \(7 1 2\)"),
    ],
)
def test_generic_video_list_errors(tmp_path, text, message):
    ann = tmp_path / "train.txt"
    ann.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        read_video_list(ann, tmp_path, ["x", "y"])


def test_class_name_files(tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("a\nb\n\n")
    assert read_class_names(names) == ["a", "b"]
    names.write_text("a\n\nb\n")
    with pytest.raises(AnnotationError, match=r"labels\.txt:2: blank line"):
        read_class_names(names)
    names.write_text("id,name\n0,a\n2,b\n")
    with pytest.raises(AnnotationError, match=r"labels\.txt:3: class index 2, expected 1"):
        read_class_names(names)
    with pytest.raises(AnnotationError, match="file not found"):
        read_class_names(tmp_path / "absent.txt")


def test_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    ann = tmp_path / "train.txt"
    ann.write_bytes("\ufeffa.mp4 1\nb.mp4 0\n".encode())
    out = read_video_list(ann, tmp_path, None)
    assert out.records[0].path == str(tmp_path / "a.mp4")
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeffwaving\nclapping\n".encode())
    assert read_class_names(labels) == ["waving", "clapping"]
    files = write_ssv2(tmp_path / "ssv2")
    files["train"].write_bytes(b"\xef\xbb\xbf" + files["train"].read_bytes())
    ann = read_ssv2(files["train"], files["labels"], files["root"], allow_unlabelled=False)
    assert len(ann.records) == 4


def test_non_utf8_list_names_the_line(tmp_path):
    ann = tmp_path / "train.txt"
    ann.write_bytes(b"a.mp4 0\nb.mp4 1\ncaf\xe9.mp4 1\n")  # Latin-1
    with pytest.raises(AnnotationError, match=r"train\.txt:3: not UTF-8 text: byte 0xe9"):
        read_video_list(ann, tmp_path, None)


def test_rawframe_list_with_offset_as_mmaction2_writes_it(tmp_path):
    ann = tmp_path / "frames.txt"
    ann.write_text("long/one 2 5 1\nlong/one 0 7 0\n1234 12 40 1\n")
    out = read_rawframe_list(ann, tmp_path, None, with_offset=True)
    assert [(r.path, r.offset, r.num_frames, r.label) for r in out.records] == [
        (str(tmp_path / "long/one"), 2, 5, 1),
        (str(tmp_path / "long/one"), 0, 7, 0),
        (str(tmp_path / "1234"), 12, 40, 1),
    ]
    plain = tmp_path / "plain.txt"
    plain.write_text("1234 40 1\nwith space 12 0\n")  # a folder named by a number
    out = read_rawframe_list(plain, tmp_path, None)
    assert [(r.path, r.offset, r.num_frames) for r in out.records] == [
        (str(tmp_path / "1234"), 0, 40),
        (str(tmp_path / "with space"), 0, 12),
    ]


@pytest.mark.parametrize(
    ("text", "with_offset", "message"),
    [
        ("v/one 12 0\nv/two 0 1\n", False, r"frames\.txt:2: number of frames must be >= 1"),
        ("v/one 0\n", False, r"frames\.txt:1: expected `<frame dir>"),
        # a start offset read without with_offset: not a folder "dir 2", not label 127
        ("dir 2 5 127\n", False, r"frames\.txt:1: 4 columns.*set with_offset: true"),
        ("dir 5 1 3\n", False, r"frames\.txt:1: .*2 labels \(1 3\): multi-label"),
        ("dir 2 5 1 3\n", True, r"frames\.txt:1: 5 columns.*2 labels \(1 3\)"),
        ("dir 5 1\n", True, r"frames\.txt:1: expected `<frame dir> <offset> <number of frames>"),
        ("dir x 5 1\n", True, r"frames\.txt:1: offset must be an integer, got 'x'"),
        ("dir -1 5 1\n", True, r"frames\.txt:1: offset must be >= 0, got -1"),
    ],
)
def test_rawframe_lines_that_do_not_fit_are_errors(tmp_path, text, with_offset, message):
    ann = tmp_path / "frames.txt"
    ann.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        read_rawframe_list(ann, tmp_path, None, with_offset=with_offset)
