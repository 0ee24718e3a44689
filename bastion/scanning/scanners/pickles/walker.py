"""A static pickle virtual machine: walks opcodes (protocols 0-5) with a symbolic stack and memo.

It never imports, calls or unpickles anything; it reports every global the stream would import.

Over 500 lines on purpose: a virtual machine, one branch per opcode of protocols 0-5.
"""

from __future__ import annotations

import codecs
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.scanning.scanners.pickles.policy import normalise


class WalkError(Exception):
    """The stream is not a pickle the Unpickler would finish reading (or a limit was hit)."""

    def __init__(self, message: str, offset: int, *, limit: bool = False) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset
        self.limit = limit
        # Ran out of input: with more bytes the walk might go on (a prefix proves nothing).
        self.truncated = message.startswith(("truncated", "pickle ends without STOP", "unterminated"))


class Global:
    """A symbolic imported object; hashable by identity like the real object would be."""

    __slots__ = ("module", "name", "offset", "_key")

    def __init__(self, module: Any, name: Any, offset: int) -> None:
        self.module = module
        self.name = name
        self.offset = offset
        self._key = normalise(module, name) if isinstance(module, str) and isinstance(name, str) else None

    def key(self) -> tuple[str, str] | None:
        return self._key


class Call:
    """The symbolic result of calling a callable (REDUCE, NEWOBJ, OBJ, INST) and its BUILD state."""

    __slots__ = ("func", "args", "state", "value")

    def __init__(self, func: Any, args: Any, value: Any = None) -> None:
        self.func = func
        self.args = args
        self.state: Any = None
        self.value = value  # a concrete result when we could compute one without executing anything


class Opaque:
    """A value the walker cannot know statically (persistent ids, out-of-band buffers)."""

    __slots__ = ()


OPAQUE = Opaque()


class BytesRef(Opaque):
    """A bytes value, as where it lies in the buffer being walked: bytes are never copied (a pickle
    may hold gigabytes of them); they are examined in place, while that buffer is open."""

    __slots__ = ("buf", "lo", "hi")

    def __init__(self, buf: Any, lo: int, hi: int) -> None:
        self.buf, self.lo, self.hi = buf, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo


class LongStr(Opaque):
    """A string longer than the walker holds (Budget.max_value): validated, not kept."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


class PDict(list):
    """A dict as (key, value) pairs: keys may be unhashable symbolic values. A list subclass because
    data pickles build millions of these and list construction is the cheapest object we can make."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in reversed(self):
            if isinstance(k, str) and k == key:
                return v
        return default

    def has(self, key: str) -> bool:
        return any(isinstance(k, str) and k == key for k, _ in self)


@dataclass
class Budget:
    """Limits shared by every walk of one scan, so nesting cannot multiply them.

    Memory: every object a walk makes is reachable from its stack, its memo, or a container it was
    moved into. `kept` counts the references moved into containers, calls and the memo, never
    decremented; with the stack size that bounds the number of live objects. `held` counts the
    characters of string values kept; a string over `max_value` is validated and not kept, and
    bytes are never copied (BytesRef)."""

    max_opcodes: int
    max_memo: int
    deadline: float
    opcodes: int = 0
    max_kept: int = 10_000_000
    max_stack: int = 1_000_000
    max_marks: int = 100_000
    max_value: int = 1 << 20
    max_held: int = 256 << 20
    kept: int = 0
    held: int = 0

    def spend(self, n: int, offset: int) -> None:
        self.opcodes += n
        if self.opcodes > self.max_opcodes:
            raise WalkError("opcode limit exceeded", offset, limit=True)
        if time.monotonic() > self.deadline:
            raise WalkError("time limit exceeded", offset, limit=True)

    def account(self, steps: int, kept: int, held: int, stack: int, marks: int, offset: int) -> None:
        """The periodic check of a walk: opcodes and time, and what it keeps in memory."""
        self.spend(steps, offset)
        self.kept += kept
        self.held += held
        if self.kept > self.max_kept:
            raise WalkError(f"object limit exceeded ({self.max_kept} references kept)", offset, limit=True)
        if self.held > self.max_held:
            raise WalkError(f"string limit exceeded ({self.max_held} bytes kept)", offset, limit=True)
        if stack > self.max_stack:
            raise WalkError(f"stack limit exceeded ({self.max_stack} items)", offset, limit=True)
        if marks > self.max_marks:
            raise WalkError(f"nesting limit exceeded ({self.max_marks} marks)", offset, limit=True)

    def hold(self, n: int, offset: int) -> None:
        self.held += n
        if self.held > self.max_held:
            raise WalkError(f"string limit exceeded ({self.max_held} bytes kept)", offset, limit=True)


@dataclass
class WalkHooks:
    """What the walker reports to its caller."""

    on_import: Callable[[Any, Any, int, str], None]
    on_bytes: Callable[[bytes | BytesRef, int], None]  # bytes to examine as a possible nested pickle
    on_call: Callable[[Global, Any, int], None]
    on_nested: Callable[[int], int]  # walk a nested pickle starting at offset, return its end
    on_anomaly: Callable[[str, int], None]
    persistent_ids: list[Any] = field(default_factory=list)  # what persistent_load would receive
    notes: list[str] = field(default_factory=list)
    # A value handed to code the walker cannot see: BUILD's state given to an object's __setstate__,
    # or the arguments of a call of a computed callable (not an imported global).
    on_handover: Callable[[Any, Any], None] | None = None

    def note(self, message: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(message)


_MARK = object()
MAX_NOTES = 1000
_UTF8_STEP = 1 << 20
_S_I = struct.Struct("<i")
_S_BIGI = struct.Struct("<I")
_S_Q = struct.Struct("<Q")
_S_H = struct.Struct("<H")
_S_D = struct.Struct(">d")
_BYTES_EVAL_ENCODINGS = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "ascii"})
_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_NUMPY_DTYPE = frozenset({("numpy", "dtype")})
_COPYREG_NEW = frozenset({("copyreg", "__newobj__"), ("copyreg", "_reconstructor"), ("copyreg", "__newobj_ex__")})


def _global_key(value: Any) -> tuple[str, str] | None:
    return value.key() if isinstance(value, Global) else None


def _utf8(raw: Any, offset: int) -> str:
    # Every unpickler (pickle, _pickle, torch's weights-only one) decodes strict UTF-8 with
    # surrogatepass and fails the load on anything else: such a stream is not a loadable pickle.
    try:
        return bytes(raw).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise WalkError(f"invalid UTF-8 in string: {exc.reason}", offset) from None


def class_of(obj: Any) -> tuple[str, str] | None:
    """The class a symbolic object was instantiated from, as isinstance() would see it."""
    if not isinstance(obj, Call):
        return None
    key = _global_key(obj.func)
    if key in _COPYREG_NEW and isinstance(obj.args, tuple) and obj.args:
        return _global_key(obj.args[0])
    return key


def _dtype_info(dtype: Any) -> tuple[int, bool] | None:
    """(itemsize, hasobject) of a pickled numpy dtype, or None when it is not one we can size."""
    if not isinstance(dtype, Call) or _global_key(dtype.func) not in _NUMPY_DTYPE:
        return None
    if not isinstance(dtype.args, tuple) or not dtype.args or not isinstance(dtype.args[0], str):
        return None
    spec = dtype.args[0]
    state = dtype.state
    kind = spec[:1]
    flags = state[7] if isinstance(state, tuple) and len(state) >= 8 and isinstance(state[7], int) else 0
    # NPY_ITEM_HASOBJECT is bit 0 of the dtype flags (structured dtypes holding objects).
    hasobject = kind == "O" or bool(flags & 1)
    elsize = state[5] if isinstance(state, tuple) and len(state) >= 6 and isinstance(state[5], int) else -1
    if elsize > 0:
        return elsize, hasobject
    digits = spec[1:]
    if not digits.isdigit():
        return None
    size = int(digits)
    if kind == "U":
        size *= 4
    return size, hasobject


class PickleWalker:
    """Walks one pickle from `start`; `run()` returns the offset just past its STOP opcode."""

    def __init__(self, buf: Any, start: int, end: int, budget: Budget, hooks: WalkHooks) -> None:
        self.buf = buf
        self.pos = start
        self.end = end
        self.budget = budget
        self.hooks = hooks
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.imports = 0
        self.result: Any = None

    # -- reading ---------------------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise WalkError("truncated pickle", pos)
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def _skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise WalkError("truncated pickle", self.pos)
        self.pos += n

    def _line_span(self) -> tuple[int, int]:
        nl = self.buf.find(b"\n", self.pos, self.end)
        if nl < 0:
            raise WalkError("unterminated line argument", self.pos)
        lo = self.pos
        self.pos = nl + 1
        return lo, nl

    def _line(self) -> bytes:
        """A line argument that must be short (a name, a number): no loader accepts a longer one."""
        lo, hi = self._line_span()
        if hi - lo > self.budget.max_value:
            raise WalkError(f"line argument of {hi - lo} bytes", lo)
        return bytes(self.buf[lo:hi])

    # -- stack helpers -----------------------------------------------------------------------------
    def _pop(self) -> Any:
        fence = self.marks[-1] if self.marks else 0
        if len(self.stack) <= fence:
            raise WalkError("stack underflow", self.pos)
        return self.stack.pop()

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise WalkError("MARK expected", self.pos)
        at = self.marks.pop()
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def _top(self) -> Any:
        fence = self.marks[-1] if self.marks else 0
        if len(self.stack) <= fence:
            raise WalkError("stack underflow", self.pos)
        return self.stack[-1]

    def _memo_put(self, key: int) -> None:
        if len(self.memo) >= self.budget.max_memo and key not in self.memo:
            raise WalkError("memo limit exceeded", self.pos, limit=True)
        self.memo[key] = self._top()
        self.budget.kept += 1

    def _memo_get(self, key: int) -> None:
        if key not in self.memo:
            raise WalkError(f"memo key {key} missing", self.pos)
        self.stack.append(self.memo[key])

    def _push_bytes(self, n: int, offset: int) -> None:
        lo = self.pos
        self._skip(n)
        data = BytesRef(self.buf, lo, lo + n)
        self.hooks.on_bytes(data, offset)
        self.stack.append(data)

    def _push_unicode(self, n: int, offset: int) -> None:
        """A UTF-8 string of n bytes at the cursor: kept when short, else validated in steps."""
        lo = self.pos
        self._skip(n)
        if n <= self.budget.max_value:
            self.budget.hold(n, offset)
            self.stack.append(_utf8(self.buf[lo : lo + n], offset))
            return
        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        for at in range(lo, lo + n, _UTF8_STEP):
            stop = min(lo + n, at + _UTF8_STEP)
            try:
                decoder.decode(self.buf[at:stop], stop == lo + n)
            except UnicodeDecodeError as exc:
                raise WalkError(f"invalid UTF-8 in string: {exc.reason}", offset) from None
        self.stack.append(LongStr(n))

    def _import(self, module: Any, name: Any, offset: int, opcode: str) -> Global:
        self.hooks.on_import(module, name, offset, opcode)
        self.imports += 1
        return Global(module, name, offset)

    def _call(self, func: Any, args: Any, offset: int) -> Call:
        value = None
        if isinstance(func, Global):
            self.hooks.on_call(func, args, offset)
            value = self._evaluate(func, args)
            if isinstance(value, bytes):
                self.budget.hold(len(value), offset)
                self.hooks.on_bytes(value, offset)
        elif self.hooks.on_handover is not None:
            self.hooks.on_handover(func, args)
        return Call(func, args, value)

    @staticmethod
    def _evaluate(func: Global, args: Any) -> Any:
        """Compute the few pure results the scanner needs (bytes built from strings), nothing else."""
        key = func.key()
        if not isinstance(args, tuple):
            return None
        if key == ("_codecs", "encode") and args and isinstance(args[0], str):
            enc = args[1] if len(args) > 1 and isinstance(args[1], str) else "utf-8"
            if enc.lower() in _BYTES_EVAL_ENCODINGS:
                try:
                    return args[0].encode(enc, "surrogatepass")
                except UnicodeError:
                    return None
        if key in {("builtins", "bytes"), ("builtins", "bytearray")} and args and isinstance(args[0], bytes | BytesRef):
            return args[0]
        return None

    @staticmethod
    def _concrete(value: Any) -> Any:
        if isinstance(value, Call) and value.value is not None:
            return value.value
        return value

    # -- joblib ----------------------------------------------------------------------------------
    def _joblib_payload(self, wrapper: Call, offset: int) -> None:
        """Step over the array bytes joblib writes right after a NumpyArrayWrapper, as joblib reads them."""
        state = wrapper.state
        if not isinstance(state, PDict):
            raise WalkError("NumpyArrayWrapper without a state dict", offset)
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise WalkError("NumpyArrayWrapper with an unreadable shape", offset)
        info = _dtype_info(state.get("dtype"))
        if info is None:
            raise WalkError("NumpyArrayWrapper with an unreadable dtype", offset)
        itemsize, hasobject = info
        if hasobject:
            # joblib reads object arrays as a nested pickle stream with a fresh stack.
            self.pos = self.hooks.on_nested(self.pos)
            return
        count = 1
        for d in shape:
            count *= d
        if state.get("numpy_array_alignment_bytes") is not None:
            self._skip(self._take(1)[0])
        self._skip(count * itemsize)
        self.hooks.note(f"joblib array payload of {count * itemsize} bytes at offset {offset}")

    # -- the machine -----------------------------------------------------------------------------
    def run(self) -> int:  # noqa: C901 - one dispatch loop reads best as one function
        """Walk to STOP. The opcodes data pickles are made of are inlined here, most frequent first,
        with a local cursor; the rest go through `_step`, which works on self.pos."""
        buf = self.buf
        end = self.end
        stack = self.stack
        push = stack.append
        memo = self.memo
        marks = self.marks
        budget = self.budget
        max_memo = budget.max_memo
        fence = marks[-1] if marks else 0
        pos = self.pos
        steps = 0
        # What this walk keeps, added to the budget every 4096 opcodes: references moved into
        # containers, calls and the memo, and characters of short strings (longer ones at once).
        kept = 0
        held = 0
        max_short = min(budget.max_value, 4096)
        while True:
            if pos >= end:
                raise WalkError("pickle ends without STOP", pos)
            op = buf[pos]
            pos += 1
            steps += 1
            if not steps & 0xFFF:
                budget.account(steps, kept, held, len(stack), len(marks), pos)
                steps = kept = held = 0
            if op == 0x68:  # BINGET
                if pos >= end:
                    raise WalkError("truncated pickle", pos)
                key = buf[pos]
                pos += 1
                if key not in memo:
                    raise WalkError(f"memo key {key} missing", pos)
                push(memo[key])
            elif op == 0x94:  # MEMOIZE
                n = len(memo)
                if len(stack) <= fence:
                    raise WalkError("stack underflow", pos)
                if n >= max_memo:
                    raise WalkError("memo limit exceeded", pos, limit=True)
                memo[n] = stack[-1]
                kept += 1
            elif op == 0x28:  # MARK
                marks.append(len(stack))
                fence = len(stack)
            elif op == 0x8C:  # SHORT_BINUNICODE
                if pos >= end:
                    raise WalkError("truncated pickle", pos)
                n = buf[pos] + pos + 1
                if n > end:
                    raise WalkError("truncated pickle", pos)
                push(_utf8(buf[pos + 1 : n], pos))
                held += n - pos
                pos = n
            elif op == 0x71:  # BINPUT
                if pos >= end:
                    raise WalkError("truncated pickle", pos)
                key = buf[pos]
                pos += 1
                if len(stack) <= fence:
                    raise WalkError("stack underflow", pos)
                if len(memo) >= max_memo and key not in memo:
                    raise WalkError("memo limit exceeded", pos, limit=True)
                memo[key] = stack[-1]
                kept += 1
            elif op == 0x7D:  # EMPTY_DICT
                push(PDict())
            elif op in (0x5D, 0x8F):  # EMPTY_LIST, EMPTY_SET
                push([])
            elif op == 0x47:  # BINFLOAT
                if pos + 8 > end:
                    raise WalkError("truncated pickle", pos)
                push(_S_D.unpack_from(buf, pos)[0])
                pos += 8
            elif op in (0x75, 0x65, 0x90):  # SETITEMS, APPENDS, ADDITEMS
                if not marks:
                    raise WalkError("MARK expected", pos)
                at = marks.pop()
                items = stack[at:]
                del stack[at:]
                fence = marks[-1] if marks else 0
                if len(stack) <= fence:
                    raise WalkError("stack underflow", pos)
                target = stack[-1]
                kept += len(items)
                if op == 0x75:
                    if len(items) % 2:
                        raise WalkError("odd number of items for SETITEMS", pos)
                    if type(target) is PDict:
                        target.extend(zip(items[0::2], items[1::2], strict=True))
                elif type(target) is list:
                    target.extend(items)
            elif op == 0x4B:  # BININT1
                if pos >= end:
                    raise WalkError("truncated pickle", pos)
                push(buf[pos])
                pos += 1
            elif op == 0x4A:  # BININT
                if pos + 4 > end:
                    raise WalkError("truncated pickle", pos)
                push(_S_I.unpack_from(buf, pos)[0])
                pos += 4
            elif op in (0x85, 0x86, 0x87):  # TUPLE1, TUPLE2, TUPLE3
                n = op - 0x84
                if len(stack) - fence < n:
                    raise WalkError("stack underflow", pos)
                items = tuple(stack[-n:])
                del stack[-n:]
                push(items)
                kept += n
            elif op == 0x4E:  # NONE
                push(None)
            elif op == 0x61:  # APPEND
                if len(stack) - fence < 2:
                    raise WalkError("stack underflow", pos)
                value = stack.pop()
                if type(stack[-1]) is list:
                    stack[-1].append(value)
                kept += 1
            elif op == 0x4D:  # BININT2
                if pos + 2 > end:
                    raise WalkError("truncated pickle", pos)
                push(_S_H.unpack_from(buf, pos)[0])
                pos += 2
            elif op == 0x58:  # BINUNICODE
                if pos + 4 > end:
                    raise WalkError("truncated pickle", pos)
                length = _S_BIGI.unpack_from(buf, pos)[0]
                n = length + pos + 4
                if n > end:
                    raise WalkError("truncated pickle", pos)
                if length <= max_short:
                    push(_utf8(buf[pos + 4 : n], pos))
                    held += length
                    pos = n
                else:
                    self.pos = pos + 4
                    self._push_unicode(length, pos - 1)
                    pos = self.pos
            elif op == 0x29:  # EMPTY_TUPLE
                push(())
            elif op in (0x88, 0x89):  # NEWTRUE, NEWFALSE
                push(op == 0x88)
            elif op == 0x72:  # LONG_BINPUT
                if pos + 4 > end:
                    raise WalkError("truncated pickle", pos)
                key = _S_BIGI.unpack_from(buf, pos)[0]
                pos += 4
                if len(stack) <= fence:
                    raise WalkError("stack underflow", pos)
                if len(memo) >= max_memo and key not in memo:
                    raise WalkError("memo limit exceeded", pos, limit=True)
                memo[key] = stack[-1]
                kept += 1
            elif op == 0x6A:  # LONG_BINGET
                if pos + 4 > end:
                    raise WalkError("truncated pickle", pos)
                key = _S_BIGI.unpack_from(buf, pos)[0]
                pos += 4
                if key not in memo:
                    raise WalkError(f"memo key {key} missing", pos)
                push(memo[key])
            elif op == 0x74:  # TUPLE
                if not marks:
                    raise WalkError("MARK expected", pos)
                at = marks.pop()
                items = tuple(stack[at:])
                del stack[at:]
                fence = marks[-1] if marks else 0
                push(items)
                kept += len(items)
            elif op == 0x52:  # REDUCE
                if len(stack) - fence < 2:
                    raise WalkError("stack underflow", pos)
                args = stack.pop()
                if type(args) is Call and args.value is not None:
                    args = args.value
                func = stack.pop()
                push(self._call(func, args, pos - 1))
                kept += 2
            elif op == 0x2E:  # STOP
                budget.account(steps, kept, held, len(stack), len(marks), pos)
                self.pos = pos
                if len(stack) <= fence:
                    raise WalkError("stack underflow", pos)
                self.result = self._concrete(stack.pop())
                return pos
            else:
                self.pos = pos
                self._step(op, pos - 1)
                pos = self.pos
                fence = marks[-1] if marks else 0

    def _step(self, op: int, offset: int) -> None:  # noqa: C901 - the opcode table
        stack = self.stack
        budget = self.budget
        if op == 0x72:  # LONG_BINPUT
            self._memo_put(_S_BIGI.unpack(self._take(4))[0])
        elif op == 0x70:  # PUT
            self._memo_put(self._int_line(offset))
        elif op == 0x6A:  # LONG_BINGET
            self._memo_get(_S_BIGI.unpack(self._take(4))[0])
        elif op == 0x67:  # GET
            self._memo_get(self._int_line(offset))
        elif op == 0x8D:  # BINUNICODE8
            self._push_unicode(self._len8(), offset)
        elif op == 0x56:  # UNICODE
            lo, hi = self._line_span()
            if hi - lo > budget.max_value:
                stack.append(LongStr(hi - lo))  # raw-unicode-escape with "replace" cannot fail
            else:
                budget.hold(hi - lo, offset)
                stack.append(bytes(self.buf[lo:hi]).decode("raw-unicode-escape", "replace"))
        elif op == 0x49:  # INT
            stack.append(self._int_or_bool(self._line(), offset))
        elif op == 0x4C:  # LONG
            stack.append(self._long_line(self._line(), offset))
        elif op == 0x8A:  # LONG1
            stack.append(int.from_bytes(self._take(self._take(1)[0]), "little", signed=True))
        elif op == 0x8B:  # LONG4
            n = _S_I.unpack(self._take(4))[0]
            if n < 0:
                raise WalkError("negative LONG4 length", offset)
            if n > budget.max_value:
                self._skip(n)
                stack.append(OPAQUE)  # an integer of millions of digits: nothing a scan needs to know
            else:
                budget.hold(n, offset)
                stack.append(int.from_bytes(self._take(n), "little", signed=True))
        elif op == 0x46:  # FLOAT
            try:
                stack.append(float(self._line()))
            except ValueError as exc:
                raise WalkError("bad FLOAT", offset) from exc
        elif op == 0x43:  # SHORT_BINBYTES
            self._push_bytes(self._take(1)[0], offset)
        elif op == 0x42:  # BINBYTES
            self._push_bytes(_S_BIGI.unpack(self._take(4))[0], offset)
        elif op in (0x8E, 0x96):  # BINBYTES8, BYTEARRAY8
            self._push_bytes(self._len8(), offset)
        # Python 2 str opcodes: the Unpickler decodes them to str (or keeps bytes with
        # encoding="bytes"), so they are treated as both a name and a possible nested pickle.
        elif op == 0x55:  # SHORT_BINSTRING
            self._push_str8(self._take(1)[0], offset)
        elif op == 0x54:  # BINSTRING
            n = _S_I.unpack(self._take(4))[0]
            if n < 0:
                raise WalkError("negative BINSTRING length", offset)
            self._push_str8(n, offset)
        elif op == 0x53:  # STRING
            lo, hi = self._line_span()
            if hi - lo > budget.max_value:
                # Too long to decode here; what it could hide is examined in place, escapes and all.
                self.hooks.on_bytes(BytesRef(self.buf, lo, hi), offset)
                stack.append(LongStr(hi - lo))
            else:
                raw = self._string_line(bytes(self.buf[lo:hi]), offset)
                budget.hold(2 * len(raw), offset)
                self.hooks.on_bytes(raw, offset)
                stack.append(raw.decode("latin-1"))
        elif op == 0x74:  # TUPLE
            items = self._pop_mark()
            budget.kept += len(items)
            stack.append(tuple(items))
        elif op == 0x6C:  # LIST
            items = self._pop_mark()
            budget.kept += len(items)
            stack.append(items)
        elif op == 0x91:  # FROZENSET
            items = self._pop_mark()
            budget.kept += len(items)
            stack.append(tuple(items))
        elif op == 0x64:  # DICT
            items = self._pop_mark()
            budget.kept += len(items)
            stack.append(PDict(zip(items[0::2], items[1::2], strict=False)))
        elif op == 0x73:  # SETITEM
            value = self._pop()
            key = self._pop()
            budget.kept += 2
            self._setitems(self._top(), [key, value], offset)
        elif op == 0x30:  # POP
            if self.marks and self.marks[-1] == len(stack):
                self.marks.pop()
            else:
                self._pop()
        elif op == 0x31:  # POP_MARK
            self._pop_mark()
        elif op == 0x32:  # DUP
            stack.append(self._top())
        elif op == 0x63:  # GLOBAL
            module = _utf8(self._line(), offset)
            name = _utf8(self._line(), offset)
            stack.append(self._import(module, name, offset, "GLOBAL"))
        elif op == 0x93:  # STACK_GLOBAL
            name = self._concrete(self._pop())
            module = self._concrete(self._pop())
            if any(isinstance(v, LongStr) for v in (module, name)):
                raise WalkError("STACK_GLOBAL of a name no module has (megabytes long)", offset)
            # The Unpickler rejects non-str operands before importing anything; a Call whose
            # result we cannot know is a name computed at load time and is reported as such.
            if not all(isinstance(v, str | Call) for v in (module, name)):
                raise WalkError("STACK_GLOBAL requires str operands", offset)
            stack.append(self._import(module, name, offset, "STACK_GLOBAL"))
        elif op == 0x69:  # INST
            module = _utf8(self._line(), offset)
            name = _utf8(self._line(), offset)
            cls = self._import(module, name, offset, "INST")
            items = self._pop_mark()
            budget.kept += len(items) + 1
            stack.append(self._call(cls, tuple(items), offset))
        elif op == 0x6F:  # OBJ
            items = self._pop_mark()
            if not items:
                raise WalkError("OBJ without a class", offset)
            budget.kept += len(items)
            stack.append(self._call(items[0], tuple(items[1:]), offset))
        elif op == 0x81:  # NEWOBJ
            args = self._pop()
            cls = self._pop()
            budget.kept += 2
            stack.append(self._call(cls, args, offset))
        elif op == 0x92:  # NEWOBJ_EX
            kwargs = self._pop()
            args = self._pop()
            cls = self._pop()
            budget.kept += 3
            stack.append(self._call(cls, (args, kwargs), offset))
        elif op == 0x52:  # REDUCE
            args = self._concrete(self._pop())
            func = self._pop()
            budget.kept += 2
            stack.append(self._call(func, args, offset))
        elif op == 0x62:  # BUILD
            state = self._pop()
            obj = self._top()
            budget.kept += 1
            if isinstance(obj, Global):
                # Real objects are built from instances; BUILD on an imported class or function
                # sets attributes on shared code, which no benign pickle does.
                self.hooks.on_anomaly("BUILD sets attributes on an imported object", offset)
            if self.hooks.on_handover is not None:
                self.hooks.on_handover(obj, state)
            if isinstance(obj, Call):
                obj.state = state
                if class_of(obj) == _JOBLIB_WRAPPER:
                    self._joblib_payload(obj, offset)
        elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            size = {0x82: 1, 0x83: 2, 0x84: 4}[op]
            code = int.from_bytes(self._take(size), "little")
            stack.append(self._import("copyreg extension registry", f"code {code}", offset, "EXT"))
        elif op == 0x50:  # PERSID
            lo, hi = self._line_span()
            if hi - lo > budget.max_value:
                self.hooks.persistent_ids.append(LongStr(hi - lo))
            else:
                budget.hold(hi - lo, offset)
                self.hooks.persistent_ids.append(bytes(self.buf[lo:hi]).decode("latin-1"))
            budget.kept += 1
            stack.append(OPAQUE)
        elif op == 0x51:  # BINPERSID
            self.hooks.persistent_ids.append(self._pop())
            budget.kept += 1
            stack.append(OPAQUE)
        elif op == 0x80:  # PROTO
            proto = self._take(1)[0]
            if proto > 5:
                raise WalkError(f"unsupported pickle protocol {proto}", offset)
        elif op == 0x95:  # FRAME
            self._len8()
        elif op == 0x97:  # NEXT_BUFFER
            stack.append(OPAQUE)
        elif op == 0x98:  # READONLY_BUFFER
            self._top()
        else:
            raise WalkError(f"invalid opcode 0x{op:02x}", offset)

    # -- argument decoding -------------------------------------------------------------------------
    def _len8(self) -> int:
        n = _S_Q.unpack(self._take(8))[0]
        if n > self.end - self.pos:
            raise WalkError("truncated pickle", self.pos)
        return n

    def _push_str8(self, n: int, offset: int) -> None:
        lo = self.pos
        self._skip(n)
        if n > self.budget.max_value:
            self.hooks.on_bytes(BytesRef(self.buf, lo, lo + n), offset)
            self.stack.append(LongStr(n))
            return
        raw = bytes(self.buf[lo : lo + n])
        self.budget.hold(2 * n, offset)
        self.hooks.on_bytes(raw, offset)
        self.stack.append(raw.decode("latin-1"))

    def _int_line(self, offset: int) -> int:
        try:
            return int(self._line())
        except ValueError as exc:
            raise WalkError("bad integer argument", offset) from exc

    @staticmethod
    def _int_or_bool(line: bytes, offset: int) -> int | bool:
        if line == b"00":
            return False
        if line == b"01":
            return True
        try:
            return int(line)
        except ValueError as exc:
            raise WalkError("bad INT", offset) from exc

    @staticmethod
    def _long_line(line: bytes, offset: int) -> int:
        if line.endswith(b"L"):
            line = line[:-1]
        try:
            return int(line)
        except ValueError as exc:
            raise WalkError("bad LONG", offset) from exc

    @staticmethod
    def _string_line(line: bytes, offset: int) -> bytes:
        if len(line) >= 2 and line[:1] == line[-1:] and line[:1] in (b"'", b'"'):
            try:
                return codecs.escape_decode(line[1:-1])[0]
            except ValueError as exc:
                raise WalkError("bad STRING escape", offset) from exc
        raise WalkError("STRING argument is not quoted", offset)

    @staticmethod
    def _setitems(target: Any, items: list[Any], offset: int) -> None:
        if len(items) % 2:
            raise WalkError("odd number of items for SETITEMS", offset)
        if type(target) is PDict:
            target.extend(zip(items[0::2], items[1::2], strict=True))
