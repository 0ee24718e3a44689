"""The malicious pickle corpus, assembled opcode by opcode from the published bypass families.

Every payload is inert (`os.system("true")`-style) and nothing here is ever unpickled.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

# -- a tiny opcode assembler ---------------------------------------------------------------------


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def uni(s: str) -> bytes:
    raw = s.encode("utf-8")
    return (b"\x8c" + bytes([len(raw)]) + raw) if len(raw) < 256 else b"X" + struct.pack("<I", len(raw)) + raw


def binbytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    return uni(module) + uni(name) + b"\x93"


def reduce_call(module: str, name: str, arg: str = "true", protocol: int = 2) -> bytes:
    """module.name(arg) as the Pickler would write it for `protocol`."""
    if protocol <= 1:
        return glob(module, name) + b"(V" + arg.encode() + b"\ntR."
    if protocol <= 3:
        return proto(protocol) + glob(module, name) + uni(arg) + b"\x85R."
    return proto(protocol) + stack_glob(module, name) + b"\x94" + uni(arg) + b"\x85R."


def benign_pickle() -> bytes:
    return proto(2) + b"}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02u."


@dataclass(frozen=True)
class Sample:
    family: str
    name: str
    data: bytes
    verdict: str  # "unsafe" | "suspicious" | "caution" (content that cannot be examined)
    flagged: tuple[tuple[str, str], ...] = ()  # imports that must be reported as not innocuous


# -- containers ----------------------------------------------------------------------------------


def torch_zip(data_pkl: bytes, prefix: str = "archive", member: str = "data.pkl", extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/{member}" if prefix else member, data_pkl)
        zf.writestr(f"{prefix}/byteorder" if prefix else "byteorder", b"little")
        zf.writestr(f"{prefix}/version" if prefix else "version", b"3\n")
        for k, v in (extra or {}).items():
            zf.writestr(k, v)
    return buf.getvalue()


def _patch_local_and_central(archive: bytes, member: str, fn) -> bytes:
    """Apply fn(bytearray, header_offset, is_central) to the headers of one member."""
    out = bytearray(archive)
    name = member.encode()
    pos = out.find(b"PK\x03\x04")
    while pos >= 0:
        nlen = struct.unpack_from("<H", out, pos + 26)[0]
        if out[pos + 30 : pos + 30 + nlen] == name:
            fn(out, pos, False)
        pos = out.find(b"PK\x03\x04", pos + 4)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        nlen = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46 : pos + 46 + nlen] == name:
            fn(out, pos, True)
        pos = out.find(b"PK\x01\x02", pos + 4)
    return bytes(out)


def zip_bad_crc(payload: bytes) -> bytes:
    """CVE-2025-1945 family: zipfile raises on the CRC, torch does not check it."""
    def corrupt(out: bytearray, pos: int, central: bool) -> None:
        struct.pack_into("<I", out, pos + (16 if central else 14), 0xDEADBEEF)
    return _patch_local_and_central(torch_zip(payload), "archive/data.pkl", corrupt)


def zip_flag_bits(payload: bytes) -> bytes:
    """CVE-2025-1944 family: the encryption bit set in the headers makes zipfile refuse the member."""
    def flag(out: bytearray, pos: int, central: bool) -> None:
        off = pos + (8 if central else 6)
        struct.pack_into("<H", out, off, struct.unpack_from("<H", out, off)[0] | 0x0001)
    return _patch_local_and_central(torch_zip(payload), "archive/data.pkl", flag)


def zip_mismatched_names(payload: bytes) -> bytes:
    """The central directory names a harmless member; the local header holds the real name."""
    archive = torch_zip(payload, member="data.pkl")
    def rename_central(out: bytearray, pos: int, central: bool) -> None:
        if central:
            nlen = struct.unpack_from("<H", out, pos + 28)[0]
            out[pos + 46 : pos + 46 + nlen] = b"archive/readme.t"[:nlen].ljust(nlen, b"x")
    return _patch_local_and_central(archive, "archive/data.pkl", rename_central)


def zip_hidden_member(payload: bytes) -> bytes:
    """A local header + data placed before the archive that no central directory entry points at."""
    hidden = zipfile.ZipInfo("archive/data.pkl")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(hidden, payload)
    raw = buf.getvalue()
    local_end = raw.find(b"PK\x01\x02")
    clean = torch_zip(benign_pickle())
    # Shift every offset of the clean archive by prepending the hidden local member.
    out = bytearray(raw[:local_end] + clean)
    shift = local_end
    eocd = out.rfind(b"PK\x05\x06")
    cd_off = struct.unpack_from("<I", out, eocd + 16)[0]
    struct.pack_into("<I", out, eocd + 16, cd_off + shift)
    pos = out.find(b"PK\x01\x02", shift)
    while pos >= 0:
        struct.pack_into("<I", out, pos + 42, struct.unpack_from("<I", out, pos + 42)[0] + shift)
        pos = out.find(b"PK\x01\x02", pos + 4)
    return bytes(out)


def zip64(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open("archive/data.pkl", "w", force_zip64=True) as fh:
        fh.write(payload)
    return buf.getvalue()


def npy_object(payload: bytes) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def npz(members: dict[str, bytes], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def joblib_after_array(payload_call: bytes) -> bytes:
    """A joblib stream: NumpyArrayWrapper, its raw float64 array bytes, then a malicious call."""
    dtype = proto(2) + glob("numpy", "dtype") + uni("f8") + b"\x89\x88\x87R" + (
        b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    state = (b"}(" + uni("subclass") + glob("numpy", "ndarray") + uni("shape") + b"K\x02\x85" + uni("order")
             + uni("C") + uni("dtype") + dtype[2:] + uni("allow_mmap") + b"\x88"
             + uni("numpy_array_alignment_bytes") + b"K\x10u")
    wrapper = glob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"
    head = proto(2) + b"]" + wrapper
    pad = 16 - (len(head) + 1) % 16
    array = bytes([pad]) + b"\xff" * pad + struct.pack("<2d", 1.0, 2.0)
    return head + array + b"a" + payload_call + b"a."


def joblib_object_array(inner: bytes) -> bytes:
    """An object-dtype NumpyArrayWrapper: joblib unpickles a nested stream right after it."""
    dtype = glob("numpy", "dtype") + uni("O8") + b"\x89\x88\x87R" + (
        b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb"
    )
    state = (b"}(" + uni("shape") + b"K\x01\x85" + uni("order") + uni("C") + uni("dtype") + dtype
             + uni("allow_mmap") + b"\x89u")
    wrapper = glob("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"
    return proto(2) + wrapper + inner + b"."


def keras_zip(config: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return buf.getvalue()


def h5_with_config(config: dict) -> bytes:
    return b"\x89HDF\r\n\x1a\n" + b"\x00" * 200 + b"model_config" + json.dumps(config).encode() + b"\x00" * 64


def legacy_torch(main: bytes) -> bytes:
    """Legacy torch.save layout: magic, protocol version, sys info, the object, storage keys."""
    magic = proto(2) + b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    version = proto(2) + b"M\xe9\x03."
    sys_info = proto(2) + b"}q\x00(X\x10\x00\x00\x00protocol_versionq\x01M\xe9\x03u."
    keys = proto(2) + b"]q\x00."
    return magic + version + sys_info + main + keys


def legacy_tar(members: dict[str, bytes]) -> bytes:
    """The pre-1.0 torch.save layout: a tar of sys_info, pickle, tensors and storages."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def safetensors_file(header: dict, data_len: int) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * data_len


# -- the corpus ------------------------------------------------------------------------------------

# Globals that run code, touch files or the network, from picklescan/modelscan/fickling advisories.
DANGEROUS_CALLS = [
    ("os", "system"), ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"),
    ("subprocess", "check_output"), ("builtins", "eval"), ("builtins", "exec"), ("builtins", "compile"),
    ("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "open"), ("builtins", "breakpoint"),
    ("builtins", "input"), ("__builtin__", "eval"), ("__builtin__", "execfile"), ("runpy", "_run_code"),
    ("runpy", "run_path"), ("importlib", "import_module"), ("pty", "spawn"), ("socket", "create_connection"),
    ("webbrowser", "open"), ("shutil", "rmtree"), ("pip", "main"), ("pip._internal.cli.main", "main"),
    ("code", "InteractiveInterpreter.runcode"), ("cProfile", "run"), ("profile", "run"), ("timeit", "timeit"),
    ("pdb", "run"), ("bdb", "Bdb.run"), ("trace", "Trace.runctx"), ("operator", "attrgetter"),
    ("_operator", "methodcaller"), ("operator", "itemgetter"), ("functools", "partial"), ("functools", "reduce"),
    ("ctypes", "CDLL"), ("_posixsubprocess", "fork_exec"), ("asyncio.subprocess", "create_subprocess_shell"),
    ("multiprocessing.util", "spawnv_passfds"), ("sys", "modules"), ("types", "CodeType"), ("marshal", "loads"),
    ("pickle", "loads"), ("_pickle", "loads"), ("torch", "load"), ("torch.jit", "load"), ("torch.hub", "load"),
    ("torch.serialization", "load"), ("torch._dynamo.guards", "GuardBuilder.get"),
    ("torch._inductor.codecache", "compile_file"), ("torch.jit.unsupported_tensor_ops", "execWrapper"),
    ("torch.utils.collect_env", "run"), ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"),
    ("numpy.testing._private.utils", "runstring"), ("numpy", "load"), ("numpy.f2py.crackfortran", "getlincoef"),
    ("idlelib.pyshell", "ModifiedInterpreter.runcode"), ("lib2to3.pgen2.grammar", "Grammar.loads"),
    ("distutils.file_util", "write_file"), ("setuptools.sandbox", "run_setup"), ("venv", "create"),
    ("ensurepip", "_run_pip"), ("tempfile", "mkdtemp"), ("signal", "raise_signal"), ("threading", "Thread"),
    ("_thread", "start_new_thread"), ("urllib.request", "urlopen"), ("http.client", "HTTPSConnection"),
    ("requests", "get"), ("requests.api", "request"), ("httpx", "get"), ("ftplib", "FTP"), ("smtplib", "SMTP"),
    ("telnetlib", "Telnet"), ("xmlrpc.client", "ServerProxy"), ("glob", "glob"), ("pathlib", "Path.write_text"),
    ("io", "FileIO"), ("_io", "FileIO"), ("codecs", "open"), ("pkgutil", "resolve_name"), ("pydoc", "pipepager"),
    ("doctest", "debug_script"), ("imaplib", "IMAP4_stream"), ("uuid", "_get_command_stdout"),
    ("_osx_support", "_read_output"), ("logging.config", "listen"), ("cloudpickle.cloudpickle", "subimport"),
    ("dill", "loads"), ("pandas", "read_pickle"), ("joblib", "load"), ("sqlite3", "connect"),
    ("linecache", "getline"), ("platform", "popen"), ("gc", "get_objects"), ("inspect", "getmodule"),
    # attribute walks through a harmless-looking module (protocol 4 dotted names)
    ("posixpath", "os.system"), ("collections", "_sys.modules"), ("torch", "serialization.load"),
    ("numpy", "testing._private.utils.runstring"), ("builtins", "object.__subclasses__"),
    ("copyreg", "_reconstructor.__globals__"),
]

SUSPICIOUS_CALLS = [
    ("__main__", "Exploit"), ("mypackage.models", "Net"), ("builtins", "print"), ("collections", "OrderedDict.fromkeys"),
    ("оs", "system"),  # Cyrillic "о": never imports os, still not innocuous
    ("torch.nn.modules.linear", "Linear"), ("sklearn.linear_model", "LogisticRegression"),
]


def corpus() -> list[Sample]:
    out: list[Sample] = []
    for mod, name in DANGEROUS_CALLS:
        for p in (0, 2, 4):
            if "." in name and p < 4:
                continue  # dotted names need protocol 4's STACK_GLOBAL (or pickle's getattr fallbacks)
            out.append(Sample("denylist", f"{mod}.{name}/p{p}", reduce_call(mod, name, protocol=p), "unsafe",
                              ((mod, name),)))
    for mod, name in SUSPICIOUS_CALLS:
        out.append(Sample("unknown-global", f"{mod}.{name}", reduce_call(mod, name, protocol=4), "suspicious",
                          ((mod, name),)))
    os_sys = (("os", "system"),)

    # Names disguised with whitespace, full-width letters, Python 2 spellings.
    out += [
        Sample("disguised-name", "fullwidth", reduce_call("ｏｓ", "system", protocol=4), "unsafe", (("ｏｓ", "system"),)),
        Sample("disguised-name", "trailing-space", reduce_call("os ", "system", protocol=4), "unsafe",
               (("os ", "system"),)),
        Sample("disguised-name", "py2-commands", reduce_call("commands", "getoutput", protocol=0), "unsafe",
               (("commands", "getoutput"),)),
        Sample("disguised-name", "py2-copy_reg-extension", reduce_call("copy_reg", "add_extension", protocol=2),
               "unsafe", (("copy_reg", "add_extension"),)),
    ]

    # STACK_GLOBAL operands from the memo, DUP, or separated by unrelated opcodes (picklescan's
    # backwards scan of previous opcodes misread these).
    memo = proto(4) + uni("os") + b"\x94" + uni("system") + b"\x94" + b"00" + b"h\x00h\x01\x93" + uni("true") + b"\x85R."
    dup = proto(4) + uni("os") + b"2" + b"0" + uni("system") + b"\x93" + uni("true") + b"\x85R."
    interleaved = proto(4) + uni("os") + b"(K\x011" + uni("system") + b"N0\x93" + uni("true") + b"\x85R."
    long_memo = proto(4) + uni("nt") + b"r\x00\x01\x00\x00" + uni("system") + b"r\x01\x01\x00\x00" + b"00" + (
        b"j\x00\x01\x00\x00j\x01\x01\x00\x00\x93" + uni("true") + b"\x85R.")
    put_get = b"Vos\np0\n0Vsystem\np1\n0g0\ng1\n\x93Vtrue\n\x85R."
    computed = proto(4) + glob("builtins", "str") + uni("os") + b"\x85R" + uni("system") + b"\x93" + uni("true") + b"\x85R."
    out += [
        Sample("stack-global-memo", "memoize", memo, "unsafe", os_sys),
        Sample("stack-global-memo", "dup", dup, "unsafe", os_sys),
        Sample("stack-global-memo", "interleaved-ops", interleaved, "unsafe", os_sys),
        Sample("stack-global-memo", "long-binput", long_memo, "unsafe", (("nt", "system"),)),
        Sample("stack-global-memo", "put-get-proto0", put_get, "unsafe", os_sys),
        Sample("stack-global-memo", "computed-name", computed, "unsafe"),
    ]

    # Every way to call: INST, OBJ, NEWOBJ, NEWOBJ_EX, BUILD with __setstate__, EXT codes.
    out += [
        Sample("call-opcodes", "inst", b"(Vtrue\nios\nsystem\n.", "unsafe", os_sys),
        Sample("call-opcodes", "obj", proto(1) + b"(" + glob("os", "system") + b"X\x04\x00\x00\x00trueo.", "unsafe",
               os_sys),
        Sample("call-opcodes", "newobj", proto(2) + glob("subprocess", "Popen") + uni("true") + b"\x85\x81.",
               "unsafe", (("subprocess", "Popen"),)),
        Sample("call-opcodes", "newobj-ex", proto(4) + stack_glob("subprocess", "Popen") + uni("true") + b"\x85}\x92.",
               "unsafe", (("subprocess", "Popen"),)),
        Sample("call-opcodes", "build-setstate", proto(2) + glob("collections", "OrderedDict") + b")R"
               + b"}" + uni("__setstate__") + glob("os", "system") + b"sb.", "unsafe", os_sys),
        Sample("call-opcodes", "ext1", proto(2) + b"\x82\x01" + uni("true") + b"\x85R.", "suspicious"),
        Sample("call-opcodes", "ext2", proto(2) + b"\x83\x01\x02" + uni("true") + b"\x85R.", "suspicious"),
        Sample("call-opcodes", "ext4", proto(2) + b"\x84\x01\x02\x03\x04" + uni("true") + b"\x85R.", "suspicious"),
    ]

    # Pickles inside pickles: bytes later handed to a loader, built by _codecs.encode, or
    # torch.storage._load_from_bytes with a malicious nested torch file.
    inner = reduce_call("os", "system", protocol=2)
    out += [
        Sample("nested", "pickle-loads-bytes", proto(3) + glob("pickle", "loads") + binbytes(inner) + b"\x85R.",
               "unsafe", (("pickle", "loads"), ("os", "system"))),
        Sample("nested", "codecs-built-bytes", proto(2) + glob("_pickle", "loads") + glob("_codecs", "encode")
               + uni(inner.decode("latin-1")) + uni("latin1") + b"\x86R\x85R.", "unsafe",
               (("_pickle", "loads"), ("os", "system"))),
        Sample("nested", "load-from-bytes", proto(2) + glob("torch.storage", "_load_from_bytes")
               + binbytes(legacy_torch(inner)) + b"\x85R.", "unsafe",
               (("torch.storage", "_load_from_bytes"), ("os", "system"))),
        # Bytes handed to a class that is not a known data constructor (its constructor or
        # __setstate__ may unpickle them), through the memo, or through bytearray() first.
        Sample("nested", "bytes-to-custom-class", proto(3) + glob("mypkg.models", "Wrapper") + binbytes(inner)
               + b"\x85R.", "unsafe", (("mypkg.models", "Wrapper"), ("os", "system"))),
        Sample("nested", "bytes-to-custom-setstate", proto(3) + glob("mypkg.models", "Wrapper") + b")\x81"
               + b"}" + uni("blob") + binbytes(inner) + b"sb.", "unsafe", (("mypkg.models", "Wrapper"), ("os", "system"))),
        Sample("nested", "memo-then-loads", proto(3) + b"]" + binbytes(inner) + b"q\x00a0"
               + glob("pickle", "loads") + b"h\x00\x85R.", "unsafe", (("pickle", "loads"), ("os", "system"))),
        Sample("nested", "bytearray-then-loads", proto(3) + glob("pickle", "loads") + glob("builtins", "bytearray")
               + binbytes(inner) + b"\x85R\x85R.", "unsafe", (("pickle", "loads"), ("os", "system"))),
        # Carried as data: nothing in the file unpickles these bytes, so loading it runs nothing; they are
        # suspicious (someone may unpickle them later), reported apart from the file's own imports.
        Sample("nested", "inert-bytes-holding-pickle", proto(3) + b"]" + binbytes(inner) + b"a.", "suspicious"),
        Sample("nested", "inert-py2-string-holding-pickle", b"(lp0\nS" + repr(inner.decode("latin-1")).encode()
               + b"\naa.", "suspicious"),
        Sample("nested", "inert-codecs-built-bytes", proto(2) + glob("_codecs", "encode") + uni(inner.decode("latin-1"))
               + uni("latin1") + b"\x86R.", "suspicious"),
        Sample("nested", "inert-bytes-in-torch-zip", torch_zip(proto(3) + b"}" + uni("blob") + binbytes(inner) + b"s."),
               "suspicious"),
    ]

    # Several pickles in one stream; the malicious one after a benign one, after junk, or truncated.
    out += [
        Sample("multi-pickle", "second-pickle", benign_pickle() + inner, "unsafe", os_sys),
        Sample("multi-pickle", "third-pickle-p0", benign_pickle() + benign_pickle()
               + reduce_call("os", "system", protocol=0), "unsafe", os_sys),
        Sample("multi-pickle", "legacy-torch-main", legacy_torch(inner), "unsafe", os_sys),
        Sample("malformed", "no-stop", inner[:-1], "unsafe", os_sys),
        Sample("malformed", "garbage-after-call", inner[:-1] + b"\xff\xfe", "unsafe", os_sys),
        # nullifAI (ReversingLabs, 2025): the stream breaks right after the call, before STOP.
        Sample("malformed", "nullifai-binunicode-before-stop", inner[:-1] + b"X\xff\xff\xff\x7f.", "unsafe",
               os_sys),
        # A FLOAT prefix that some scanners cannot decode while CPython walks through it.
        Sample("malformed", "float-prefix", b"}F1.0\ncos\nsystem\n(S'true'\ntR.", "unsafe", os_sys),
        Sample("malformed", "proto-6", b"\x80\x06" + inner[2:], "suspicious"),
        Sample("malformed", "stack-underflow", proto(2) + b"R.", "suspicious"),
        Sample("malformed", "proto-midstream", proto(2) + b"\x80\x04" + inner[2:], "unsafe", os_sys),
    ]

    # Zip containers: weird layouts, and the picklescan zip bypasses.
    out += [
        Sample("zip", "torch-zip", torch_zip(inner), "unsafe", os_sys),
        Sample("zip", "odd-directory", torch_zip(inner, prefix="a/b/c/../d"), "unsafe", os_sys),
        Sample("zip", "no-pkl-extension", torch_zip(inner, member="data/0"), "unsafe", os_sys),
        Sample("zip", "second-member", torch_zip(benign_pickle(), extra={"archive/extra.bin": inner}), "unsafe",
               os_sys),
        Sample("zip", "deflated", npz({"archive/data.pkl": inner}, compressed=True), "unsafe", os_sys),
        Sample("zip", "bad-crc-CVE-2025-1945", zip_bad_crc(inner), "unsafe", os_sys),
        Sample("zip", "flag-bits-CVE-2025-1944", zip_flag_bits(inner), "unsafe", os_sys),
        Sample("zip", "mismatched-headers", zip_mismatched_names(inner), "unsafe", os_sys),
        Sample("zip", "hidden-local-member", zip_hidden_member(inner), "unsafe", os_sys),
        Sample("zip", "zip64", zip64(inner), "unsafe", os_sys),
        Sample("zip", "deflated-call-after-64k", npz({"archive/data.pkl": proto(3) + binbytes(b"\0" * 100_000) + b"0"
                                                      + inner[2:]}, compressed=True), "unsafe", os_sys),
        Sample("zip", "pickle-with-zip-tail", proto(3) + glob("os", "system") + uni("true") + b"\x85R0"
               + binbytes(torch_zip(benign_pickle())) + b".", "unsafe", os_sys),
        Sample("zip", "junk-prefix", b"JUNK" * 50 + torch_zip(inner), "unsafe", os_sys),
        Sample("zip", "nested-zip", torch_zip(benign_pickle(), extra={"archive/inner.zip": torch_zip(inner)}),
               "unsafe", os_sys),
    ]

    # Legacy tar checkpoints: storages interleave pickles with raw bytes, so every pickle is carved.
    out += [
        Sample("tar", "legacy-tar-pickle", legacy_tar({"sys_info": benign_pickle(), "pickle": inner,
                                                        "storages": proto(2) + b"K\x00.", "tensors": b""}),
               "unsafe", os_sys),
        Sample("tar", "legacy-tar-storage-after-raw-bytes", legacy_tar({
            "sys_info": benign_pickle(), "pickle": benign_pickle(),
            "storages": proto(2) + b"K\x01." + struct.pack("<q", 4) + b"\x01" * 16 + inner}), "unsafe", os_sys),
    ]

    # numpy, joblib and compression.
    out += [
        Sample("numpy", "npy-object", npy_object(inner), "unsafe", os_sys),
        Sample("numpy", "npz-object", npz({"arr.npy": npy_object(inner)}), "unsafe", os_sys),
        Sample("numpy", "npz-compressed-object", npz({"arr.npy": npy_object(inner)}, compressed=True), "unsafe",
               os_sys),
        Sample("joblib", "call-after-array-payload", joblib_after_array(glob("os", "system") + uni("true") + b"\x85R"),
               "unsafe", os_sys),
        Sample("joblib", "object-array-nested", joblib_object_array(inner), "unsafe", os_sys),
        Sample("compressed", "gzip", gzip.compress(inner), "unsafe", os_sys),
        Sample("compressed", "bz2", bz2.compress(inner), "unsafe", os_sys),
        Sample("compressed", "xz", lzma.compress(inner), "unsafe", os_sys),
        Sample("compressed", "lzma-alone", lzma.compress(inner, format=lzma.FORMAT_ALONE), "unsafe", os_sys),
        Sample("compressed", "zlib", zlib.compress(inner), "unsafe", os_sys),
        Sample("compressed", "gzip-truncated", gzip.compress(inner + random.Random(0).randbytes(8192))[:-4000], "unsafe",
               os_sys),
        Sample("compressed", "gzip-corrupt", gzip.compress(inner)[:12] + b"\xff" * 40, "suspicious"),
        Sample("compressed", "gzip-of-torch-zip", gzip.compress(torch_zip(inner)), "unsafe", os_sys),
        Sample("compressed", "joblib-zfile", b"ZF" + hex(len(inner)).encode().ljust(19) + zlib.compress(inner),
               "unsafe", os_sys),
        Sample("compressed", "7z-archive", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 32, "caution"),
        Sample("compressed", "joblib-lz4-magic", b"\x04\x22\x4d\x18" + b"\x00" * 32, "suspicious"),
    ]

    # Code-carrying Keras formats.
    lambda_cfg = {"class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Lambda", "config": {"function": {"class_name": "__lambda__"}}}]}}
    custom_cfg = {"class_name": "Functional", "config": {"layers": [
        {"module": "evil_pkg.layers", "class_name": "Backdoor", "config": {}, "registered_name": "Backdoor"}]}}
    func_cfg = {"class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"activation": {
            "module": "os", "class_name": "function", "config": "system", "registered_name": "function"}}}]}}
    out += [
        Sample("keras", "keras-lambda", keras_zip(lambda_cfg), "unsafe", (("keras.layers", "Lambda"),)),
        Sample("keras", "keras-custom-module", keras_zip(custom_cfg), "suspicious", (("evil_pkg.layers", "Backdoor"),)),
        Sample("keras", "keras-os-function", keras_zip(func_cfg), "unsafe", (("os", "system"),)),
        Sample("keras", "h5-lambda", h5_with_config(lambda_cfg), "unsafe", (("keras.layers", "Lambda"),)),
        Sample("keras", "h5-pickled-attribute", b"\x89HDF\r\n\x1a\n" + b"\x00" * 300 + inner + b"\x00" * 50,
               "unsafe", os_sys),
    ]

    # Safetensors that do not validate are not proven safe.
    out += [
        Sample("safetensors", "overlapping", safetensors_file({
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12), "suspicious"),
        Sample("safetensors", "offsets-past-end", safetensors_file({
            "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8), "suspicious"),
        Sample("safetensors", "shape-mismatch", safetensors_file({
            "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8), "suspicious"),
        Sample("safetensors", "metadata-not-strings", safetensors_file({
            "__metadata__": {"x": 1}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, 1), "suspicious"),
        Sample("safetensors", "unknown-dtype", safetensors_file({
            "a": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 1]}}, 1), "suspicious"),
    ]
    return out
