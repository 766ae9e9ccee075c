"""Frame-index sampling against hand-computed expectations."""

import numpy as np
import pytest

from tdsclip.data.sampling import clip_centres, local_windows, train_centres, val_centres


def test_train_centres_one_random_frame_per_segment():
    # n=16, T=4: segments [0,4) [4,8) [8,12) [12,16)
    draws = np.stack([train_centres(16, 4, np.random.default_rng(s)) for s in range(200)])
    assert draws.shape == (200, 4)
    for i in range(4):
        assert set(draws[:, i].tolist()) == set(range(4 * i, 4 * i + 4))


def test_train_centres_uneven_segments():
    # n=10, T=4: starts (i*10)//4 = 0,2,5,7 and ends 2,5,7,10
    draws = np.stack([train_centres(10, 4, np.random.default_rng(s)) for s in range(300)])
    expected = [{0, 1}, {2, 3, 4}, {5, 6}, {7, 8, 9}]
    assert [set(draws[:, i].tolist()) for i in range(4)] == expected


def test_train_centres_short_video_is_deterministic_and_valid():
    # n=3 < T=8: every segment is one frame, floor(i*3/8) = 0,0,0,1,1,1,2,2
    out = train_centres(3, 8, np.random.default_rng(0))
    assert out.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_train_centres_pure_given_generator():
    state = np.random.get_state()
    a = train_centres(100, 8, np.random.default_rng(7))
    b = train_centres(100, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG untouched


def test_val_centres_are_segment_centres():
    assert val_centres(16, 4).tolist() == [2, 6, 10, 14]  # floor((2i+1)*16/8)
    assert val_centres(10, 4).tolist() == [1, 3, 6, 8]  # floor((2i+1)*10/8)
    assert val_centres(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # floor((2i+1)*3/16)


def test_clip_centres_two_clips_at_thirds_of_segments():
    # n=30, T=3: segments of 10 frames; clips at 1/3 and 2/3 -> 3.33 and 6.67 into each
    assert clip_centres(30, 3, 2).tolist() == [[3, 13, 23], [6, 16, 26]]
    # one clip is the validation protocol
    np.testing.assert_array_equal(clip_centres(37, 8, 1)[0], val_centres(37, 8))
    # four K400 clips of a 40-frame video, T=2: points (k+1)/5 of each 20-frame segment
    assert clip_centres(40, 2, 4).tolist() == [[4, 24], [8, 28], [12, 32], [16, 36]]


def test_local_windows_clamped_to_video():
    out = local_windows(np.array([0, 5, 9]), 5, 10)
    assert out.tolist() == [[0, 0, 0, 1, 2], [3, 4, 5, 6, 7], [7, 8, 9, 9, 9]]
    assert local_windows(np.array([[1, 2]]), 3, 3).tolist() == [[[0, 1, 2], [1, 2, 2]]]
    assert local_windows(np.array([4]), 1, 10).tolist() == [[4]]


def test_three_frame_video_gives_full_clip():
    windows = local_windows(val_centres(3, 8), 5, 3)
    assert windows.shape == (8, 5)
    assert windows.min() == 0 and windows.max() == 2


@pytest.mark.parametrize("bad", [0, 2, 4])
def test_local_frames_must_be_odd(bad):
    with pytest.raises(ValueError, match="odd"):
        local_windows(np.array([3]), bad, 10)


def test_empty_video_rejected():
    with pytest.raises(ValueError, match="at least 1 frame"):
        val_centres(0, 8)
