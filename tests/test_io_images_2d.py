"""read_image_2d / list_images_2d on real COVID-CT (RGB, RGBA, L; PNG and JPEG), Alzheimer JPEGs,
IXI .mat slices, a CT DICOM slice, and single-slice NIfTI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from MedSRLib.errors import InputFileError, UnsupportedImageError
from MedSRLib.io import list_images_2d, read_image_2d, read_volume, write_volume
from MedSRLib.volume import Volume

COVID = ("covid-ct", "Images-processed", "CT_COVID")


@pytest.mark.parametrize(
    "name, mode",
    [
        ("2020.03.01.20029769-p21-73_1%2.png", "RGB"),
        ("2020.03.22.20040782-p24-1533-4.png", "RGBA"),
        ("2020.03.13.20035212-p23-158.png", "L"),
    ],
)
def test_covid_ct_png_modes_become_grey(name, mode):
    path = shared_path(*COVID, name)
    with Image.open(path) as image:
        assert image.mode == mode
        raw = np.asarray(image)
        width, height = image.size
    grey = read_image_2d(path)
    assert grey.dtype == np.float32 and grey.shape == (height, width)
    if mode == "L":
        np.testing.assert_array_equal(grey, raw)
    else:
        rgb = raw[..., :3].astype(np.float64)
        luma = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000  # ITU-R BT.601
        assert np.abs(grey - luma).max() <= 1.0  # Pillow rounds to 8 bits
        if np.all(raw[..., 0] == raw[..., 1]) and np.all(raw[..., 1] == raw[..., 2]):
            np.testing.assert_array_equal(grey, raw[..., 0])  # grey stored as RGB keeps its values


def test_covid_ct_jpegs_in_rgb_and_l():
    folder = shared_path("covid-ct", "Images-processed", "CT_NonCOVID")
    modes = {}
    for name in ("0.jpg", "13.jpg"):
        with Image.open(folder / name) as image:
            modes[image.mode] = (folder / name, image.size)
    assert set(modes) == {"RGB", "L"}
    for path, (width, height) in modes.values():
        grey = read_image_2d(path)
        assert grey.shape == (height, width) and 0 <= grey.min() and grey.max() <= 255


def test_alzheimer_jpegs_and_folder_listing():
    folder = shared_path("alzheimer-mri", "test", "ModerateDemented")
    paths = list_images_2d(folder)
    assert paths == sorted(folder.glob("*.jpg"))
    assert len(paths) > 0
    image = read_image_2d(paths[0])
    assert image.shape == (208, 176) and image.dtype == np.float32  # 176 x 208 (w x h) 8-bit grey
    assert 0 <= image.min() < image.max() <= 255
    parent = folder.parent
    everything = list_images_2d(parent)
    assert len(everything) == len(list(parent.rglob("*.jpg")))
    assert everything == sorted(everything, key=lambda p: p.relative_to(parent).as_posix())
    assert list_images_2d(parent, recursive=False) == []  # only class subfolders at the top


def test_ixi_mat_slices():
    t2 = shared_path("mr-volumes", "ixi-slices", "IXI040-Guys-0724-T2_69.mat")
    image = read_image_2d(t2)
    assert image.shape == (256, 256) and image.dtype == np.float32
    assert (image.min(), image.max()) == (0.0, 2088.0)
    np.testing.assert_array_equal(read_image_2d(t2, key="dcm"), image)
    with pytest.raises(InputFileError, match="no variable 'img'"):
        read_image_2d(t2, key="img")
    pd = shared_path("mr-volumes", "ixi-slices", "IXI040-Guys-0724-PD_69.mat")
    assert read_image_2d(pd).max() == 2399.0


def test_ct_dicom_slice_in_hu_matches_the_series():
    folder = shared_path("totalseg-ct", "example_ct_dicom")
    series = read_volume(folder)
    files = sorted(folder.iterdir())
    slices = [read_image_2d(f) for f in files[:3]]
    for image in slices:
        assert image.shape == (512, 512) and image.min() >= -1024
        # each file is one slice of the series (rescale applied the same way)
        assert any(np.array_equal(image, series.array[k]) for k in range(series.shape[0]))


def test_single_slice_nifti_and_multi_slice_refusal(tmp_path):
    array = np.arange(12 * 9, dtype=np.int16).reshape(1, 12, 9)
    one = Volume(array=array, spacing=(0.5, 0.5, 3.0), origin=(0, 0, 0), direction=np.eye(3))
    path = write_volume(one, tmp_path / "slice.nii.gz")
    np.testing.assert_array_equal(read_image_2d(path), array[0])
    coronal = Volume(array=array.reshape(12, 1, 9), spacing=(0.5, 3.0, 0.5), origin=(0, 0, 0), direction=np.eye(3))
    np.testing.assert_array_equal(read_image_2d(write_volume(coronal, tmp_path / "cor.nrrd")), array[0])
    with pytest.raises(UnsupportedImageError, match="read_volume"):
        read_image_2d(shared_path("totalseg-ct", "example_ct_sm.nii.gz"))


def test_sixteen_bit_png_keeps_its_values(tmp_path):
    values = (np.arange(40 * 30, dtype=np.uint16) * 50).reshape(40, 30)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "deep.png"), values.astype(np.float32))


def test_bad_2d_inputs(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_image_2d(tmp_path / "missing.png")
    source = shared_path(*COVID, "2020.03.13.20035212-p23-158.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(source[: len(source) // 3])
    with pytest.raises(InputFileError) as err:
        read_image_2d(tmp_path / "cut.png")
    assert "\n" not in str(err.value)
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (1, 2)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImageError, match="2 frames"):
        read_image_2d(tmp_path / "stack.tif")
    with pytest.raises(InputFileError, match="not found"):
        list_images_2d(tmp_path / "nowhere")
    (tmp_path / ".hidden.png").write_bytes(source)
    assert [p.name for p in list_images_2d(tmp_path)] == ["cut.png", "stack.tif"]
