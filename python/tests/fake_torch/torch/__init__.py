"""A stand-in for the parts of torch that kda/_ops.py reads, for the CPU
tests (tests/test_cpu_fake_torch.py): CUDA tensors are host buffers, which
the stand-in driver (build/tests/libkda_fake_cuda.so) accepts as device
pointers, so the functions run end to end without torch or a GPU.

torch.cuda.capturing and torch.cuda.sync_raises let a test play a stream
capture; LOG records allocations and synchronisations in order.

Several devices: torch.cuda.device_count() is torch.cuda.count (2); the
current device (torch.cuda.set_device, torch.cuda.device(i)) is per thread,
as torch's is; torch.cuda.streams maps a device index to the raw handle of
its current stream (0 when absent, the default stream); a device index in
torch.cuda.capturing_devices has a capturing current stream (capturing
alone: every device's). DEV_LOG records (what, device index) of each
allocation ("alloc"), synchronisation ("synchronize", "sync_stream") and raw
stream query ("raw_stream"). The stand-in driver has one device: a test
that runs a call on cuda:1 gives kda a context for it (see
test_cpu_fake_torch.py)."""
import ctypes
import math
import threading


class dtype:
    def __init__(self, name, size, fp, ct):
        self.name, self.itemsize, self._fp, self._ct = name, size, fp, ct

    def __repr__(self):
        return "torch." + self.name


float32 = dtype("float32", 4, True, ctypes.c_float)
float16 = dtype("float16", 2, True, ctypes.c_uint16)
bfloat16 = dtype("bfloat16", 2, True, ctypes.c_uint16)
float64 = dtype("float64", 8, True, ctypes.c_double)
int32 = dtype("int32", 4, False, ctypes.c_int32)
int64 = dtype("int64", 8, False, ctypes.c_int64)


class device:
    def __init__(self, spec, index=None):
        if isinstance(spec, device):
            self.type, self.index = spec.type, spec.index
            return
        if isinstance(spec, int):
            self.type, self.index = "cuda", spec
            return
        if ":" in spec:
            t, i = spec.split(":")
            self.type, self.index = t, int(i)
        else:
            self.type, self.index = spec, index

    def __repr__(self):
        return "%s:%s" % (self.type, self.index) if self.index is not None else self.type


LOG = []
DEV_LOG = []


class Tensor:
    def __init__(self, shape, dt, dev, storage=None, offset=0, strides=None):
        self.shape = tuple(shape)
        self.dtype = dt
        self.device = device(dev)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda": the current one
            self.device = device("cuda", cuda.current_device())
        n = 1
        for s in self.shape:
            n *= s
        self._n = n
        if storage is None:
            storage = (dt._ct * max(n, 1))()
        self._storage = storage
        self._offset = offset
        if strides is None:
            strides, acc = [], 1
            for s in reversed(self.shape):
                strides.append(acc)
                acc *= s
            strides = tuple(reversed(strides))
        self._strides = tuple(strides)
        self.requires_grad = False

    # --- queries
    def get_device(self):
        return -1 if self.device.type == "cpu" else (self.device.index or 0)

    def is_contiguous(self, memory_format=None):
        acc = 1
        for s, st in zip(reversed(self.shape), reversed(self._strides)):
            if s != 1 and st != acc:
                return False
            acc *= s
        return True

    def data_ptr(self):
        return ctypes.addressof(self._storage) + self._offset * self.dtype.itemsize

    def numel(self):
        return self._n

    def dim(self):
        return len(self.shape)

    def stride(self):
        return self._strides

    def is_floating_point(self):
        return self.dtype._fp

    # --- conversions
    def float(self):
        return self.to(float32)

    def to(self, dt):
        LOG.append(("to", dt))
        t = Tensor(self.shape, dt, self.device)
        DEV_LOG.append(("alloc", t.get_device()))
        if not dt._fp and not self.dtype._fp:
            for i in range(self._n):
                t._storage[i] = self._storage[self._offset + i]
        return t

    def contiguous(self):
        return self

    def clone(self):
        t = Tensor(self.shape, self.dtype, self.device)
        DEV_LOG.append(("alloc", t.get_device()))
        for i in range(self._n):
            t._storage[i] = self._storage[self._offset + i]
        return t

    def view(self, *shape):
        return Tensor(shape, self.dtype, self.device, self._storage, self._offset)

    def __getitem__(self, k):
        if isinstance(k, int):
            if k < 0:
                k += self.shape[0]
            inner = self._n // self.shape[0]
            return Tensor(self.shape[1:], self.dtype, self.device, self._storage,
                          self._offset + k * inner)
        if isinstance(k, slice):
            start, stop, _ = k.indices(self.shape[0])
            inner = self._n // self.shape[0] if self.shape[0] else 0
            return Tensor((max(stop - start, 0),) + self.shape[1:], self.dtype, self.device,
                          self._storage, self._offset + start * inner)
        raise TypeError(k)

    def item(self):
        if self.device.type != "cpu":
            LOG.append(("sync", "item"))
        return self._storage[self._offset]

    def __int__(self):
        return int(self.item())

    def __float__(self):
        return float(self.item())

    def tolist(self):
        return [self._storage[self._offset + i] for i in range(self._n)]

    def __repr__(self):
        return "FakeTensor(%s, %s, %s)" % (self.shape, self.dtype, self.device)


def _dev(d):
    return device(d) if d is not None else device("cpu")


def _logged(t):
    DEV_LOG.append(("alloc", t.get_device()))
    return t


def empty_like(t, dtype=None):
    LOG.append(("alloc", "empty_like"))
    return _logged(Tensor(t.shape, dtype or t.dtype, t.device))


def empty(*shape, dtype=float32, device=None):
    LOG.append(("alloc", "empty"))
    return _logged(Tensor(shape, dtype, _dev(device)))


def zeros(*shape, dtype=float32, device=None):
    LOG.append(("alloc", "zeros"))
    return _logged(Tensor(shape, dtype, _dev(device)))


def tensor(vals, dtype=int32, device=None):
    t = Tensor((len(vals),), dtype, _dev(device))
    for i, v in enumerate(vals):
        t._storage[i] = v
    return t


def _index(d):
    """A device argument (None, int, str, device) as a CUDA device index."""
    if d is None:
        return cuda.current_device()
    if isinstance(d, int):
        return d
    d = device(d)
    return cuda.current_device() if d.index is None else d.index


class _Stream:
    def __init__(self, dev):
        self.device = device("cuda", dev)
        self.cuda_stream = cuda.streams.get(dev, 0)

    def synchronize(self):
        LOG.append(("sync", "stream"))
        DEV_LOG.append(("sync_stream", self.device.index))
        if cuda.sync_raises or cuda.capturing or self.device.index in cuda.capturing_devices:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")


class _DeviceGuard:
    """torch.cuda.device(i): i is the current device inside the block."""

    def __init__(self, d):
        self.idx = _index(d)

    def __enter__(self):
        self.prev = cuda.current_device()
        cuda.set_device(self.idx)
        return self

    def __exit__(self, *exc):
        cuda.set_device(self.prev)
        return False


class _Cuda:
    capturing = False
    sync_raises = False
    count = 2

    def __init__(self):
        self._tls = threading.local()
        self.streams = {}
        self.capturing_devices = set()

    def is_available(self):
        return True

    def init(self):
        pass

    def device_count(self):
        return self.count

    def current_device(self):
        return getattr(self._tls, "device", 0)

    def set_device(self, d):
        i = _index(d)
        if not 0 <= i < self.count:
            raise RuntimeError("CUDA error: invalid device ordinal %d" % i)
        self._tls.device = i

    def device(self, d):
        return _DeviceGuard(d)

    def is_current_stream_capturing(self):
        return self.capturing or self.current_device() in self.capturing_devices

    def synchronize(self, device=None):
        i = _index(device)
        LOG.append(("sync", "synchronize"))
        DEV_LOG.append(("synchronize", i))
        if self.sync_raises or self.capturing or i in self.capturing_devices:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    def current_stream(self, device=None):
        return _Stream(_index(device))


cuda = _Cuda()


class _CMod:
    @staticmethod
    def _cuda_getCurrentRawStream(dev):
        DEV_LOG.append(("raw_stream", dev))
        return cuda.streams.get(dev, 0)


_C = _CMod()
