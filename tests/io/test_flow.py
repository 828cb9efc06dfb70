"""Flow files (.flo, KITTI 16-bit PNG) and the colour-wheel picture."""

import struct

import cv2
import numpy as np
import pytest

from tubelet.io.flow import flow_to_image, read_flo, read_kitti_flow, write_flo, write_kitti_flow


def random_flow(h=5, w=7, seed=0):
    return np.random.default_rng(seed).normal(0, 10, (h, w, 2)).astype(np.float32)


def test_flo_round_trip_and_byte_layout(tmp_path):
    flow = random_flow()
    path = write_flo(tmp_path / "a.flo", flow)
    data = path.read_bytes()
    assert data[:4] == b"PIEH" and struct.unpack("<ii", data[4:12]) == (7, 5)
    # Row-major, u and v interleaved: the second float after the header is v at (y=0, x=0).
    assert struct.unpack("<f", data[16:20])[0] == flow[0, 0, 1]
    np.testing.assert_array_equal(read_flo(path), flow)


def test_damaged_and_missing_flo_files(tmp_path):
    path = write_flo(tmp_path / "a.flo", random_flow())
    (tmp_path / "cut.flo").write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated"):
        read_flo(tmp_path / "cut.flo")
    (tmp_path / "x.flo").write_bytes(b"not a flow file")
    with pytest.raises(ValueError, match="PIEH"):
        read_flo(tmp_path / "x.flo")
    with pytest.raises(FileNotFoundError, match="nope.flo"):
        read_flo(tmp_path / "nope.flo")
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        write_flo(tmp_path / "b.flo", np.zeros((4, 4, 3), np.float32))


def test_kitti_png_round_trip_and_opencv_agree(tmp_path):
    flow = np.round(random_flow() * 64) / 64  # KITTI's 1/64 px resolution
    valid = np.random.default_rng(1).random((5, 7)) > 0.3
    path = write_kitti_flow(tmp_path / "f.png", flow, valid)
    read, read_valid = read_kitti_flow(path)
    np.testing.assert_array_equal(read_valid, valid)
    np.testing.assert_array_equal(read, flow)
    # An independent decoder reads the same 16-bit values (OpenCV gives BGR).
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal((raw[..., 2].astype(np.float32) - 2**15) / 64, flow[..., 0])
    # And a PNG written by OpenCV (with its own filtering) reads back through ours.
    cv2.imwrite(str(tmp_path / "cv.png"), raw)
    np.testing.assert_array_equal(read_kitti_flow(tmp_path / "cv.png")[0], flow)


def test_kitti_reader_refuses_8_bit_png(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb8.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="16-bit RGB"):
        read_kitti_flow(tmp_path / "rgb8.png")


def test_colour_wheel():
    flow = np.zeros((2, 3, 4), np.float32)
    flow[0, 0, 1] = 5.0  # rightward: red in the Middlebury coding
    flow[0, 0, 2] = 2.5  # half as fast: half saturated
    image = flow_to_image(flow)
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    assert image[1, 1].tolist() == [255, 255, 255]  # no motion is white
    assert image[0, 1].tolist() == [255, 0, 0]
    assert image[0, 2].tolist() == [255, 128, 128]
    # With a fixed max_flow the same vector gets the same colour in any frame.
    assert flow_to_image(flow, max_flow=10.0)[0, 1].tolist() == [255, 128, 128]
