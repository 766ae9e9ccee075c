"""Datasets and loaders end to end on small real files of every format."""

import gc
import logging
import random
import shutil

import numpy as np
import pytest
import torch
from data_fixtures import (
    data_config,
    files_config,
    frame_id,
    motion_config,
    write_corrupt_files,
    write_frame_folder,
    write_indexed_video,
    write_k400,
    write_ssv1,
    write_ssv2,
)

from tdsclip.data import (
    BadSampleTracker,
    DataLoadError,
    EvalSampler,
    TrainSampler,
    VideoReadError,
    build_dataset,
    build_loader,
    read_video_views,
)
from tdsclip.data.decoding import read_video_frames

T, M, SIZE = 4, 3, 32


def check_train_item(item, num_sample=2):
    assert item["video"].shape == (num_sample, T, M, 3, SIZE, SIZE)
    assert item["video"].dtype == torch.uint8
    assert item["label"].shape == (num_sample,) and item["label"].dtype == torch.int64


def check_eval_item(item, views):
    assert item["video"].shape == (views, T, M, 3, SIZE, SIZE)
    assert item["video"].dtype == torch.uint8


def test_ssv2_webm_dataset(tmp_path):
    files = write_ssv2(tmp_path)
    cfg = files_config(
        "ssv2",
        files,
        num_classes=5,
        flip="swap_lr",
        rand_augment="rand-m7-n4-mstd0.5-inc1",
    )
    train = build_dataset(cfg, "train")
    assert len(train) == 4 and train.num_classes == 5
    assert train.transform.flip_pairs == {0: 1, 1: 0, 3: 4, 4: 3}
    check_train_item(train[0])
    test = build_dataset(cfg, "test")
    item = test[1]
    check_eval_item(item, views=6)
    assert item["label"] == -1 and item["valid"]
    check_eval_item(build_dataset(cfg, "val")[0], views=1)


def test_ssv1_frame_folders(tmp_path):
    files = write_ssv1(tmp_path)
    cfg = files_config("ssv1", files, num_classes=4, flip="swap_lr")
    train = build_dataset(cfg, "train")
    for i in range(3):  # 10, 3 and 7 frames
        item = train[i]
        check_train_item(item)
        assert item["skipped"] == []
    check_eval_item(build_dataset(cfg, "test")[0], views=6)


def test_kinetics_nested_portrait_and_missing(tmp_path):
    files = write_k400(tmp_path)
    cfg = files_config("k400", files, num_classes=3, resize=40, grayscale_p=0.2, test_clips=4)
    train = build_dataset(cfg, "train")
    check_train_item(train[0])  # the portrait clip: short side 40 -> 60 x 40, crops of 32
    item = train[2]  # its file is not under root
    check_train_item(item)
    assert item["index"] != 2
    assert [p for p, _ in item["skipped"]] == [train.records[2].path]
    assert item["skipped"][0][1].startswith("missing")
    test = build_dataset(cfg, "test")
    check_eval_item(test[0], views=12)


def test_generic_lists_of_videos_and_frame_folders(tmp_path):
    write_indexed_video(tmp_path / "v" / "a b.mp4", 20, codec="h264")
    write_indexed_video(tmp_path / "v" / "c.webm", 3, codec="vp9")  # a 3-frame video
    (tmp_path / "train.txt").write_text("v/a b.mp4 1\nv/c.webm 0\n")
    (tmp_path / "labels.txt").write_text("first\nsecond\n")
    cfg = data_config(
        root=str(tmp_path),
        train_ann=str(tmp_path / "train.txt"),
        val_ann=str(tmp_path / "train.txt"),
        labels=str(tmp_path / "labels.txt"),
    )
    train = build_dataset(cfg, "train")
    assert train.classes == ["first", "second"]
    check_train_item(train[1])
    check_eval_item(build_dataset(cfg, "test")[1], views=6)

    write_frame_folder(tmp_path / "f" / "one", 9)
    (tmp_path / "frames.txt").write_text("f/one 9 1\n")
    cfg.update(format="rawframes", train_ann=str(tmp_path / "frames.txt"), labels=None)
    check_train_item(build_dataset(cfg, "train")[0])


def test_mmaction2_rawframes_with_offset_and_their_file_names(tmp_path):
    """`with_offset` lists over img_00001.jpg folders (mmaction2's defaults), image_tmpl left
    at SSv1's: clips come from the frames after the offset."""
    write_frame_folder(tmp_path / "long", 24, template="img_{:05d}.jpg")
    (tmp_path / "frames.txt").write_text("long 0 12 0\nlong 12 12 1\n")
    cfg = data_config(
        format="rawframes",
        root=str(tmp_path),
        train_ann=str(tmp_path / "frames.txt"),
        val_ann=str(tmp_path / "frames.txt"),
        with_offset=True,
    )
    val = build_dataset(cfg, "val")
    assert [(r.offset, r.num_frames, r.label) for r in val.records] == [(0, 12, 0), (12, 12, 1)]
    for record, first in zip(val.records, (0, 12), strict=True):
        frames = val.reader(record, lambda n: np.arange(n))
        assert [frame_id(f) for f in frames] == list(range(first, first + 12))
    check_eval_item(val[1], views=1)


@pytest.fixture
def bad_list(tmp_path):
    bad = write_corrupt_files(tmp_path / "v")
    for i in range(4):
        write_indexed_video(tmp_path / "v" / f"good{i}.mp4", 16, codec="h264", seed=i)
    (tmp_path / "list.txt").write_text(
        f"v/good0.mp4 0\nv/absent.mp4 1\nv/{bad['garbage'].name} 1\nv/{bad['truncated'].name} 0\n"
        + "".join(f"v/good{i}.mp4 1\n" for i in range(1, 4))
    )
    return data_config(
        root=str(tmp_path), train_ann=str(tmp_path / "list.txt"), val_ann=str(tmp_path / "list.txt")
    )


def test_training_replaces_bad_samples_and_reports_them(bad_list):
    train = build_dataset(bad_list, "train")
    for index in (1, 2, 3):
        item = train[(index, 5)]
        check_train_item(item)
        assert item["index"] in (0, 4, 5, 6)  # a good video
        assert item["skipped"][0][0] == train.records[index].path
        assert all(
            reason.split(":")[0] in ("missing", "unreadable") for _, reason in item["skipped"]
        )
        again = train[(index, 5)]
        assert torch.equal(item["video"], again["video"]) and item["skipped"] == again["skipped"]
    assert train[0]["skipped"] == []


def test_training_gives_up_when_nothing_loads(tmp_path):
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4 1\n")
    cfg = data_config(root=str(tmp_path), train_ann=str(tmp_path / "list.txt"))
    train = build_dataset(cfg, "train")
    with pytest.raises(DataLoadError, match=r"consecutive samples could not be loaded.*root"):
        train[0]


def test_evaluation_marks_bad_videos_invalid(bad_list):
    val = build_dataset(bad_list, "val")
    loader = build_loader(val, split="val", batch_size=4, num_workers=0, seed=0, pin_memory=False)
    batch = next(iter(loader))
    assert batch["valid"].tolist() == [True, False, False, False]
    assert batch["label"].tolist() == [0, 1, 1, 0]
    assert batch["video"].shape == (4, 1, T, M, 3, SIZE, SIZE)
    assert batch["video"][1:].eq(0).all() and batch["video"][0].any()
    assert batch["error"][0] == "" and "absent.mp4: missing" in batch["error"][1]
    assert "garbage.mp4: unreadable" in batch["error"][2]


def batches(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_train_batches_independent_of_num_workers(small_motion_root):
    cfg = motion_config(small_motion_root, rand_augment="rand-m7-n4-mstd0.5-inc1")
    train = build_dataset(cfg, "train")
    runs = {}
    for workers in (0, 2):
        loader = build_loader(
            train,
            split="train",
            batch_size=3,
            num_workers=workers,
            seed=11,
            pin_memory=False,
            persistent_workers=True,
        )
        runs[workers] = [batches(loader, 0), batches(loader, 1)]
    for epoch in (0, 1):
        assert len(runs[0][epoch]) == 4  # 12 videos / 3, drop_last
        for a, b in zip(runs[0][epoch], runs[2][epoch], strict=True):
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
            assert a["video"].shape == (3, 2, T, M, 3, SIZE, SIZE)
    # epochs reach the (persistent) workers: same index, different epoch -> different clip
    first = runs[2][0][0]
    index = int(first["index"][0])
    assert torch.equal(first["video"][0], train[(index, 0)]["video"])
    assert not torch.equal(train[(index, 1)]["video"], train[(index, 0)]["video"])
    # repeated augmentation: the S copies of a video differ
    assert not torch.equal(first["video"][0, 0], first["video"][0, 1])


def test_zero_workers_leave_main_process_rng_alone(small_motion_root):
    cfg = motion_config(small_motion_root, rand_augment="rand-m7-n4-mstd0.5-inc1")
    loader = build_loader(
        build_dataset(cfg, "train"),
        split="train",
        batch_size=2,
        num_workers=0,
        seed=0,
        pin_memory=False,
    )
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    next(iter(loader))
    assert random.getstate() == states[0]
    np.testing.assert_array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_train_sampler_shards_shuffles_and_resumes():
    shards = [TrainSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    pairs = [list(s) for s in shards]
    assert all(len(p) == 4 for p in pairs)  # ceil(10 / 3), padded
    assert {e for p in pairs for _, e in p} == {2}
    assert {i for p in pairs for i, _ in p} == set(range(10))
    again = TrainSampler(10, seed=3, rank=1, world_size=3)
    again.set_epoch(2)
    assert list(again) == pairs[1]
    again.set_epoch(3)
    assert list(again) != pairs[1]
    again.set_epoch(2, start=3)  # resume after 3 consumed samples
    assert list(again) == pairs[1][3:] and len(again) == 1


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_sampler_disjoint_and_complete(world_size):
    shares = [list(EvalSampler(10, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sorted(i for s in shares for i in s) == list(range(10))  # every index exactly once
    assert shares[0] == list(range(0, 10, world_size))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_loaders_cover_dataset_once(small_motion_root, world_size):
    val = build_dataset(motion_config(small_motion_root), "val")
    seen = []
    for rank in range(world_size):
        loader = build_loader(
            val,
            split="val",
            batch_size=4,
            num_workers=0,
            seed=0,
            rank=rank,
            world_size=world_size,
            pin_memory=False,
        )
        seen += [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(seen) == list(range(len(val)))


def test_read_video_views_matches_the_test_dataset(small_motion_root):
    cfg = motion_config(small_motion_root)
    test = build_dataset(cfg, "test")
    views = read_video_views(test.records[0].path, cfg)
    assert views.shape == (6, T, M, 3, SIZE, SIZE) and views.dtype == torch.uint8
    assert torch.equal(views, test[0]["video"])
    # clip-major views: the 3 crops of a clip share frames, clips 1 and 2 do not
    assert not torch.equal(views[0], views[3])


def test_bad_sample_tracker_logs_each_path_once(caplog):
    tracker = BadSampleTracker()
    with caplog.at_level(logging.WARNING, logger="tdsclip.data.bad_samples"):
        tracker.update([("/a.mp4", "missing: file not found"), ("/b.mp4", "unreadable: x")])
        tracker.update([("/a.mp4", "missing: file not found")])
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "/a.mp4 (missing: file not found)",
        "/b.mp4 (unreadable: x)",
    ]
    summary = tracker.epoch_summary()
    assert summary["replaced"] == 3 and summary["bad_videos"] == 2
    assert summary["paths"]["/a.mp4"] == [2, "missing: file not found"]
    tracker.reset_epoch()
    tracker.update([("/a.mp4", "missing: file not found")])
    assert tracker.epoch_summary()["replaced"] == 1 and len(caplog.records) == 2


def test_loader_rejects_mismatched_split(small_motion_root):
    val = build_dataset(motion_config(small_motion_root), "val")
    with pytest.raises(TypeError, match="VideoTrainDataset"):
        build_loader(val, split="train", batch_size=2, num_workers=0, seed=0)


def test_missing_root_is_not_a_crash_in_eval(small_motion_root, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(small_motion_root, moved)
    cfg = motion_config(moved)
    val = build_dataset(cfg, "val")
    shutil.rmtree(moved / "val")
    item = val[0]
    assert not item["valid"] and "missing" in item["error"]


class _DecordClips(torch.utils.data.Dataset):
    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.from_numpy(read_video_frames(self.path, np.arange, backend="decord"))


@pytest.mark.timeout(60)
def test_decord_error_in_parent_does_not_hang_forked_workers(tmp_path):
    """A failed decord read must not leave a VideoReader alive: forked workers that collect it
    deadlock in its destructor (its decoder thread exists only in the parent)."""
    broken = tmp_path / "48x48.mp4"  # decord 0.6 fails on this frame size (measured)
    write_indexed_video(broken, 6, codec="h264", height=48, width=48)
    with pytest.raises(VideoReadError, match="decord"):
        read_video_frames(str(broken), np.arange, backend="decord")
    good = tmp_path / "good.mp4"
    write_indexed_video(good, 6, codec="h264")
    loader = torch.utils.data.DataLoader(
        _DecordClips(str(good)), batch_size=1, num_workers=1, worker_init_fn=lambda _: gc.collect()
    )
    assert [b.shape for b in loader] == [(1, 6, 64, 96, 3)] * 2
