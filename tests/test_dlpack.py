"""The core's Tensor leaves through DLPack and the buffer protocol without copies."""
from __future__ import annotations

import ctypes
import gc
import sys

import numpy as np
import pytest

import mambaret as mr
from mambaret import _C


@pytest.fixture
def tensor(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    return enc.model.forward(np.array([1, 2, 3, 4], np.int32), np.array([0, 1, 4], np.int64), convert_to="tensor")


def data_pointer(capsule, name):
    """The DLTensor's data pointer: the first field of DLManagedTensor, after two uint32s and a
    pointer in DLManagedTensorVersioned."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get(capsule, name.encode())
    offset = 0 if name == "dltensor" else 8 + 8 + 8 + 8  # version, manager_ctx, deleter, flags
    return ctypes.c_void_p.from_address(address + offset).value


def test_shape_dtype_device(tensor):
    assert tensor.shape == (2, 24) and tensor.dtype == "float32" and tensor.device == "cpu"
    assert tensor.__dlpack_device__() == (1, 0)


def test_numpy_views_without_copy(tensor):
    a = np.asarray(tensor)
    b = np.from_dlpack(tensor)
    assert a.shape == (2, 24)
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    np.testing.assert_array_equal(a, b)


def test_legacy_and_versioned_capsules(tensor):
    legacy = tensor.__dlpack__()
    assert "dltensor" in repr(legacy) and "versioned" not in repr(legacy)
    versioned = tensor.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(versioned)
    older = tensor.__dlpack__(max_version=(0, 8))
    assert "versioned" not in repr(older)
    pointer = np.asarray(tensor).__array_interface__["data"][0]
    assert data_pointer(legacy, "dltensor") == pointer
    assert data_pointer(versioned, "dltensor_versioned") == pointer


def test_copy_flag(tensor):
    pointer = np.asarray(tensor).__array_interface__["data"][0]
    assert data_pointer(tensor.__dlpack__(max_version=(1, 0), copy=False), "dltensor_versioned") == pointer
    copied = tensor.__dlpack__(max_version=(1, 0), copy=True)
    assert data_pointer(copied, "dltensor_versioned") != pointer
    array = np.from_dlpack(tensor, copy=True)
    assert array.__array_interface__["data"][0] != pointer
    np.testing.assert_array_equal(array, np.asarray(tensor))


def test_stream_on_cpu_is_an_error(tensor):
    with pytest.raises(BufferError):
        tensor.__dlpack__(stream=1)


def test_other_device_is_an_error(tensor):
    with pytest.raises(BufferError):
        tensor.__dlpack__(dl_device=(2, 0))
    assert "dltensor" in repr(tensor.__dlpack__(dl_device=(1, 0)))


def test_deleter_runs_exactly_once(tensor):
    base = sys.getrefcount(tensor)
    capsule = tensor.__dlpack__()
    assert sys.getrefcount(tensor) == base + 1  # the export holds the tensor
    del capsule  # never consumed: the capsule's destructor runs the deleter
    gc.collect()
    assert sys.getrefcount(tensor) == base
    consumed = np.from_dlpack(tensor)
    assert sys.getrefcount(tensor) == base + 1
    del consumed  # the consumer runs the deleter, the capsule must not run it again
    gc.collect()
    assert sys.getrefcount(tensor) == base


def test_capsule_is_consumed_once(tensor):
    torch = pytest.importorskip("torch")
    capsule = tensor.__dlpack__()
    t = torch.utils.dlpack.from_dlpack(capsule)
    with pytest.raises(Exception):
        torch.utils.dlpack.from_dlpack(capsule)
    assert t.shape == (2, 24)


def test_torch_zero_copy(tensor):
    torch = pytest.importorskip("torch")
    t = torch.from_dlpack(tensor)
    assert t.data_ptr() == np.asarray(tensor).__array_interface__["data"][0]
    t[0, 0] = 123.0
    assert np.asarray(tensor)[0, 0] == 123.0


def test_result_outlives_the_tensor(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    view = np.from_dlpack(enc.model.forward(np.array([5], np.int32), np.array([0, 1], np.int64), convert_to="tensor"))
    gc.collect()
    assert view.shape == (1, 24) and np.isfinite(view).all()


def test_encode_as_dlpack_and_torch(tiny_model_dir):
    torch = pytest.importorskip("torch")
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    expect = enc.encode([[1, 2], [3]])
    out = enc.encode([[1, 2], [3]], convert_to="dlpack")
    assert isinstance(out, _C.Tensor)
    np.testing.assert_array_equal(np.from_dlpack(out), expect)
    t = enc.encode([[1, 2], [3]], convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(expect))


def test_token_ids_from_a_dlpack_producer(tiny_model_dir):
    torch = pytest.importorskip("torch")
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    expect = enc.encode([[4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(enc.encode(torch.tensor([[4, 5, 6], [7, 8, 9]])), expect)
    # alone in its batch: the BLAS may sum in another order, hence a tolerance
    np.testing.assert_allclose(enc.encode([torch.tensor([4, 5, 6])])[0], expect[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("max_version", [None, (1, 0)])
def test_capsule_destructor_keeps_a_pending_exception(tensor, max_version):
    # len() fails, then the interpreter drops the only reference to the capsule while the
    # TypeError is set: the destructor must leave that exception in place
    base = sys.getrefcount(tensor)
    with pytest.raises(TypeError, match="len"):
        len(tensor.__dlpack__(max_version=max_version))
    gc.collect()
    assert sys.getrefcount(tensor) == base  # the export was still released


def test_single_input_through_dlpack_is_one_dimensional(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    one = enc.encode([1, 2, 3], convert_to="dlpack")
    assert one.shape == (24,) and np.from_dlpack(one).shape == (24,)
    np.testing.assert_array_equal(np.from_dlpack(one), enc.encode([[1, 2, 3]])[0])
