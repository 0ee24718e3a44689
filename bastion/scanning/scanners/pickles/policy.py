"""The import policy of the pickle scanner: which (module, name) globals are innocuous or dangerous.

Everything that is neither exactly allowlisted nor denylisted is suspicious: unknown is never innocuous.
"""

from __future__ import annotations

import _compat_pickle  # stdlib data tables only: the py2 -> py3 renames the Unpickler applies
import unicodedata
from dataclasses import dataclass

from bastion.scanning.results import ImportSafety


def _words(text: str) -> list[str]:
    return text.split()


# Exact (module, name) pairs that only construct plain data. Matching is exact on purpose: a
# protocol-4 name such as "OrderedDict.fromkeys" or "Path.write_text" walks attributes and is a
# different callable, so it must never inherit its parent's verdict.
_TORCH_STORAGES = _words(
    "BFloat16 Bool Byte Char ComplexDouble ComplexFloat Double Float Half Int Long QInt32 QInt8 "
    "QUInt2x4 QUInt4x2 QUInt8 Short Untyped"
)
_TORCH_TENSORS = ["BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short"]
_TORCH_DTYPES = _words(
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 float16 "
    "float32 float64 float4_e2m1fn_x2 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz "
    "float8_e8m0fnu int8 int16 int32 int64 qint32 qint8 quint2x4 quint4x2 quint8 uint8 uint16 uint32 "
    "uint64 half float double long int short cfloat cdouble chalf"
) + [f"int{i}" for i in range(1, 8)] + [f"uint{i}" for i in range(1, 8)]
_TORCH_REBUILDERS = _words(
    "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter "
    "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor "
    "_rebuild_meta_tensor_no_storage _rebuild_nested_tensor _rebuild_wrapper_subclass "
    "_rebuild_device_tensor_from_numpy _rebuild_device_tensor_from_cpu_tensor"
)
_NUMPY_CORE = ("numpy.core", "numpy._core")
_NUMPY_SCALAR_TYPES = _words(
    "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 longdouble "
    "complex64 complex128 clongdouble str_ bytes_ void datetime64 timedelta64 object_"
)


def _allowlist() -> dict[str, frozenset[str]]:
    allow: dict[str, set[str]] = {
        # torch.save / legacy torch: what torch's own weights_only unpickler accepts.
        "torch": {f"{s}Storage" for s in _TORCH_STORAGES}
        | {f"{t}Tensor" for t in _TORCH_TENSORS}
        | set(_TORCH_DTYPES)
        | {"Size", "Tensor", "device", "strided", "sparse_coo", "sparse_csr", "_mkldnn"}
        | {"per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
           "per_channel_affine_float_qparams", "contiguous_format", "channels_last", "preserve_format"},
        "torch.cuda": {f"{s}Storage" for s in _TORCH_STORAGES} | {f"{t}Tensor" for t in _TORCH_TENSORS},
        "torch.sparse": {f"{t}Tensor" for t in _TORCH_TENSORS},
        "torch.cuda.sparse": {f"{t}Tensor" for t in _TORCH_TENSORS},
        "torch.storage": {"TypedStorage", "UntypedStorage"},
        "torch._utils": set(_TORCH_REBUILDERS),
        "torch._tensor": {"_rebuild_from_type_v2"},
        "torch.nn.parameter": {"Parameter", "Buffer"},
        "torch.serialization": {"_get_layout"},
        "torch.torch_version": {"TorchVersion"},
        # Plain containers and values.
        "collections": {"OrderedDict", "defaultdict", "Counter", "deque"},
        "builtins": {"set", "frozenset", "slice", "complex", "bytearray", "bytes", "int", "float", "str",
                     "list", "dict", "tuple", "bool", "range", "object"},
        # copyreg's helpers only call base.__new__ / cls.__new__ on classes that arrive as separate,
        # separately classified globals.
        "copyreg": {"_reconstructor", "__newobj__", "__newobj_ex__"},
        # _codecs.encode only converts str -> bytes; encoding lookup is confined to the encodings
        # package, so no module outside the stdlib codecs can be imported through it.
        "_codecs": {"encode"},
        "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
        "decimal": {"Decimal"},
        "fractions": {"Fraction"},
        "uuid": {"UUID"},
        "argparse": {"Namespace"},  # fairseq-style checkpoints keep their training args in one
        "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"},
        # numpy arrays, dtypes, scalars and RNG state.
        "numpy": {"ndarray", "dtype", "matrix"} | set(_NUMPY_SCALAR_TYPES),
        "numpy.dtypes": {f"{t.capitalize().rstrip('_')}DType" for t in _NUMPY_SCALAR_TYPES}
        | {"Float64DType", "Int64DType", "BoolDType", "StrDType", "BytesDType", "VoidDType", "ObjectDType",
           "DateTime64DType", "TimeDelta64DType", "StringDType", "LongDoubleDType", "CLongDoubleDType"},
        "numpy.random._pickle": {"__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor"},
        "numpy.random.mtrand": {"RandomState"},
        "numpy.random._generator": {"Generator"},
        "numpy.random._mt19937": {"MT19937"},
        "numpy.random._pcg64": {"PCG64", "PCG64DXSM"},
        "numpy.random._philox": {"Philox"},
        "numpy.random._sfc64": {"SFC64"},
        # Cython's generated unpickle helpers check a layout checksum and restore plain state.
        "numpy.random.bit_generator": {"SeedSequence", "__pyx_unpickle_SeedSequence"},
        # joblib's placeholder for an array whose bytes follow in the stream; the walker reads past
        # those bytes exactly as joblib does, and scans object arrays as nested pickles.
        "joblib.numpy_pickle": {"NumpyArrayWrapper"},
    }
    for core in _NUMPY_CORE:
        allow[f"{core}.multiarray"] = {"_reconstruct", "scalar"}
        allow[f"{core}.numeric"] = {"_frombuffer"}
    return {k: frozenset(v) for k, v in allow.items()}


ALLOWLIST = _allowlist()

# Dotted paths that execute code, reach the file system or the network, import modules, load other
# pickles, or walk attributes. A global is dangerous when any prefix of "module.name" is listed.
_DANGEROUS_PATHS = frozenset(
    _words(
        "os posix nt posixpath ntpath genericpath subprocess _posixsubprocess _winapi pty tty termios "
        "fcntl socket _socket ssl select selectors socketserver asyncio _asyncio multiprocessing "
        "_multiprocessing concurrent threading _thread signal resource mmap ctypes _ctypes cffi sys types "
        "marshal gc inspect atexit site sysconfig platform builtins.eval builtins.exec builtins.compile "
        "builtins.getattr builtins.setattr builtins.delattr builtins.__import__ builtins.open "
        "builtins.breakpoint builtins.input builtins.globals builtins.locals builtins.vars builtins.help "
        "builtins.execfile builtins.apply builtins.file builtins.reload builtins.exit builtins.quit "
        "builtins.memoryview builtins.type builtins.super builtins.classmethod builtins.staticmethod "
        "builtins.property builtins.dir builtins.__build_class__ builtins.__loader__ builtins.__spec__ "
        "runpy importlib imp zipimport pkgutil pkg_resources setuptools distutils ensurepip venv pip code "
        "codeop cProfile profile _lsprof pstats timeit pdb bdb trace tracemalloc doctest pydoc idlelib "
        "lib2to3 _pyrepl rlcompleter readline tkinter _tkinter turtle operator.attrgetter "
        "operator.itemgetter operator.methodcaller _operator.attrgetter _operator.itemgetter "
        "_operator.methodcaller functools.partial functools.partialmethod functools.reduce "
        "functools.singledispatch functools.wraps functools.update_wrapper functools.cached_property "
        "pickle _pickle cPickle pickletools dill cloudpickle shelve dbm copyreg.add_extension "
        "copyreg.remove_extension copyreg.pickle copyreg.dispatch_table copyreg.__dict__ io.open "
        "io.FileIO io.open_code _io.open _io.FileIO _io.open_code codecs.open codecs.EncodedFile "
        "fileinput linecache tokenize.open tempfile shutil glob fnmatch.filter filecmp zipfile tarfile "
        "gzip.open bz2.open lzma.open sqlite3 _sqlite3 mailbox mailcap logging webbrowser urllib urllib2 "
        "http httplib requests httpx aiohttp ftplib smtplib smtpd poplib imaplib nntplib telnetlib xmlrpc "
        "wsgiref antigravity uuid _osx_support _aix_support _bootlocale _sitebuiltins test crypt cgi "
        "cgitb pathlib torch.load torch.save torch.serialization torch.jit torch.hub torch._dynamo "
        "torch._inductor torch.package torch.fx torch.distributed torch.ops torch._ops torch.library "
        "torch._C._jit torch.utils.cpp_extension torch.utils.collect_env torch.utils.bottleneck "
        "torch.utils._config_module torch.utils.data.datapipes torch.utils.checkpoint torch.compile "
        "torch._export torch.export torch.storage._load_from_bytes torch.from_file torch.classes "
        "torch.backends numpy.load numpy.save numpy.savez numpy.savez_compressed numpy.savetxt "
        "numpy.loadtxt numpy.genfromtxt numpy.fromfile numpy.memmap numpy.core.memmap numpy._core.memmap "
        "numpy.lib numpy.f2py numpy.testing numpy.distutils numpy.ctypeslib "
        "numpy.ma.core.MaskedArray.dump numpy.ma.mrecords numpy.core._internal numpy._core._internal "
        "numpy.ndarray.dump numpy.ndarray.tofile pandas.read_pickle pandas.io joblib keras tensorflow"
    )
)

# Attribute names that are primitives for escaping into arbitrary code when walked to.
_DANGEROUS_ATTRS = frozenset(
    _words(
        "__globals__ __builtins__ __import__ __subclasses__ __getattribute__ __getattr__ __setattr__ "
        "__code__ __closure__ __dict__ __reduce__ __reduce_ex__ __class__ __base__ __bases__ __mro__ "
        "__init__ __new__ __call__ __loader__ __spec__ __self__ __func__ __wrapped__ f_globals f_locals "
        "gi_frame cr_frame tb_frame"
    )
)



def is_dotted_identifier(text: object) -> bool:
    """True for "a.b.c" made of Python identifiers: the only names an import can succeed with."""
    return isinstance(text, str) and all(part.isidentifier() for part in text.split("."))


@dataclass(frozen=True)
class Classification:
    safety: ImportSafety
    reason: str


def normalise(module: str, name: str) -> tuple[str, str]:
    """The names the Unpickler actually imports: Python 2 names are mapped by fix_imports."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _dangerous(module: str, name: str) -> str | None:
    parts = f"{module}.{name}".split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in _DANGEROUS_PATHS:
            return f"{prefix} can run code, touch files or the network, or load other pickles"
    # A dotted protocol-4 name walks attributes; "posixpath" + "os.system" reaches os.system, so
    # every attribute step is checked as if it were a module path of its own.
    name_parts = name.split(".")
    if len(name_parts) > 1:
        for start in range(len(name_parts)):
            for end in range(start + 1, len(name_parts) + 1):
                step = ".".join(name_parts[start:end])
                # Modules keep private aliases of what they import (collections._sys, shutil._os).
                if step in _DANGEROUS_PATHS or step.lstrip("_") in _DANGEROUS_PATHS:
                    return f"attribute path {name!r} walks into {step}"
    for part in name_parts:
        if part in _DANGEROUS_ATTRS:
            return f"attribute {part!r} is a primitive for reaching arbitrary code"
    return None


def classify(module: str, name: str) -> Classification:
    """Classify one imported global. Innocuous only by exact allowlist entry; dangerous when the raw,
    fix_imports-mapped or NFKC-folded name reaches a denylisted path; everything else is suspicious."""
    if not (isinstance(module, str) and isinstance(name, str)):
        return Classification(ImportSafety.DANGEROUS, "import name computed at load time")
    # Exact allowlist entries are reviewed one by one, so they win over the prefix rules below
    # (torch.serialization._get_layout is data, torch.serialization.load is not). Python 2 names
    # count as what fix_imports maps them to; unmapped they fail to import at all.
    mapped_module, mapped_name = normalise(module, name)
    if mapped_name in ALLOWLIST.get(mapped_module, ()):
        return Classification(ImportSafety.INNOCUOUS, "known data constructor")
    candidates = {(module, name), normalise(module, name)}
    # Unicode look-alikes and stray whitespace never import the real module, but NFKC folding tells
    # the reader what the author was imitating.
    folded = unicodedata.normalize("NFKC", module).strip(), unicodedata.normalize("NFKC", name).strip()
    candidates.add(folded)
    candidates.add(normalise(*folded))
    for mod, nm in candidates:
        reason = _dangerous(mod, nm)
        if reason:
            return Classification(ImportSafety.DANGEROUS, reason)
    if not (is_dotted_identifier(module) and is_dotted_identifier(name)):
        return Classification(ImportSafety.SUSPICIOUS, "module or name is not a plain Python identifier")
    if "." in name:
        return Classification(ImportSafety.SUSPICIOUS, "dotted name walks attributes of the imported object")
    return Classification(ImportSafety.SUSPICIOUS, "not on the allowlist of known data constructors")
