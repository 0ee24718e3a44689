"""Template-injection checks for Jinja chat templates (GGUF `tokenizer.chat_template*`), by their syntax tree.

A chat template is rendered by llama.cpp, transformers and every server that loads the model; a
template that reaches Python objects (`''.__class__.__mro__[1].__subclasses__()`, `cycler.__init__.
__globals__.os`, `self._TemplateReference__context`, `|attr('__globals__')`) runs code in an unsandboxed
renderer and probes the sandbox of the others. The template is parsed with Jinja2's own parser and the
tree is walked; it is never rendered. String expressions are folded (concatenation, `~`, `*`, `join`,
`format`, variables set to constants) so a dunder built from pieces is found like a literal one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.ext import Extension, loopcontrols

MAX_TEMPLATE_CHARS = 1 << 20
MAX_NODES = 200_000

# Globals Jinja and its hosts expose whose attributes lead to Python internals: benign chat templates
# call `namespace(...)` and `range(...)`, never reach into them.
GADGETS = frozenset({"cycler", "joiner", "namespace", "lipsum", "range", "dict", "self", "request", "config",
                     "url_for", "get_flashed_messages", "g", "session"})
# Globals no chat template uses at all: merely naming them is a probe.
NEVER_USED = frozenset({"cycler", "joiner", "lipsum", "self", "request", "config", "url_for",
                        "get_flashed_messages", "g", "session"})
# Attributes that exist only to walk from an object to frames, globals, modules or code.
ESCAPE_ATTRIBUTES = frozenset({
    "mro", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "func_globals", "func_code", "gi_frame",
    "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame", "tb_next", "co_code", "co_consts",
    "_TemplateReference__context", "_module", "environ", "modules", "import_module", "builtins",
})
# Called as methods, these run commands or code.
ESCAPE_CALLS = frozenset({"popen", "system", "spawn", "spawnl", "execv", "execl", "eval", "exec", "compile",
                          "check_output", "run", "Popen", "call", "getoutput", "load_module", "open"})
_DUNDER = re.compile(r"^__\w+__$")
_DUNDER_PIECE = re.compile(r"__\w|\w__|^_{2,}$")
_STRING_BUILDERS = frozenset({"join", "format", "replace", "string", "lower", "upper", "reverse", "first",
                              "last", "list", "striptags", "trim", "capitalize", "title", "urlencode", "safe"})


@dataclass(frozen=True)
class TemplateFinding:
    unsafe: bool  # an injection construct; False: suspicious (a piece of one, or unparseable)
    message: str


class _Generation(Extension):
    """transformers' `{% generation %}...{% endgeneration %}` tag (AssistantTracker), parsed as its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _environment() -> Environment:
    # The extensions the renderers load (transformers: loopcontrols and its generation tag), so a
    # template they accept parses here too. Only .parse() is ever called.
    return Environment(extensions=[loopcontrols, _Generation])  # noqa: S701 - never renders


def check_template(source: str) -> list[TemplateFinding]:
    """Findings in one chat template (empty when nothing in it reaches outside the template)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return [TemplateFinding(False, f"template of {len(source)} characters is over the "
                                       f"{MAX_TEMPLATE_CHARS}-character limit: not examined")]
    try:
        tree = _environment().parse(source)
    except TemplateSyntaxError as exc:
        return [TemplateFinding(False, f"not a valid Jinja template (line {exc.lineno}): {exc.message}")]
    except RecursionError:
        return [TemplateFinding(False, "template nested too deeply to parse")]
    return _Walk(tree).findings


class _Walk:
    def __init__(self, tree: nodes.Template) -> None:
        self.findings: list[TemplateFinding] = []
        self.constants: dict[str, str | None] = {}  # variable -> the string it is set to (None: not constant)
        all_nodes = list(_bounded(tree))
        if len(all_nodes) >= MAX_NODES:
            self.add(False, f"template has more than {MAX_NODES} syntax nodes: not examined whole")
        # A name the template binds itself ({% for g in ... %}, {% set config = ... %}, a macro's
        # argument) is its own variable, not the host's global of that name.
        self.bound = {n.name for n in all_nodes if isinstance(n, nodes.Name) and n.ctx in ("store", "param")}
        for node in all_nodes:
            if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
                folded = self.fold(node.node)
                name = node.target.name
                self.constants[name] = folded if name not in self.constants or self.constants[name] == folded else None
        for node in all_nodes:
            self.visit(node)

    def add(self, unsafe: bool, message: str) -> None:
        if len(self.findings) < 50 and TemplateFinding(unsafe, message) not in self.findings:
            self.findings.append(TemplateFinding(unsafe, message))

    def fold(self, node: nodes.Node, depth: int = 0) -> str | None:
        """The string an expression always evaluates to, when it is built from constants alone."""
        if depth > 50:
            return None
        if isinstance(node, nodes.Const):
            return node.value if isinstance(node.value, str) else (str(node.value) if isinstance(
                node.value, int) and not isinstance(node.value, bool) else None)
        if isinstance(node, nodes.Name):
            return self.constants.get(node.name)
        if isinstance(node, nodes.Concat):
            parts = [self.fold(n, depth + 1) for n in node.nodes]
            return None if None in parts else "".join(p for p in parts if p is not None)
        if isinstance(node, nodes.Add):
            left, right = self.fold(node.left, depth + 1), self.fold(node.right, depth + 1)
            return left + right if left is not None and right is not None else None
        if isinstance(node, nodes.Mul) and isinstance(node.right, nodes.Const) and isinstance(node.right.value, int):
            left = self.fold(node.left, depth + 1)
            return left * min(node.right.value, 64) if left is not None else None
        if isinstance(node, nodes.Filter) and node.name in ("join", "lower", "string", "trim", "reverse"):
            if node.node is None:
                return None
            if node.name == "join" and isinstance(node.node, nodes.List | nodes.Tuple):
                sep = self.fold(node.args[0], depth + 1) if node.args else ""
                items = [self.fold(n, depth + 1) for n in node.node.items]
                return None if sep is None or None in items else sep.join(i for i in items if i is not None)
            inner = self.fold(node.node, depth + 1)
            if inner is None:
                return None
            return {"lower": inner.lower(), "string": inner, "trim": inner.strip(), "reverse": inner[::-1]}.get(
                node.name)
        if isinstance(node, nodes.Filter) and node.name == "format" and node.node is not None:
            pattern = self.fold(node.node, depth + 1)
            args = [self.fold(a, depth + 1) for a in node.args]
            if pattern is None or None in args:
                return None
            try:
                return pattern % tuple(args)
            except (TypeError, ValueError):
                return None
        return None

    def visit(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr):
            self.attribute(node.attr, node.node, "attribute access")
        elif isinstance(node, nodes.Getitem):
            key = self.fold(node.arg)
            if key is not None:
                self.attribute(key, node.node, "subscript")
            elif _builds_string(node.arg):
                self.add(False, "subscript with a key built from string operations (a way to spell a dunder "
                                "name in pieces)")
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            name = self.fold(node.args[0]) if node.args else None
            if name is None:
                self.add(True, "|attr() with a name computed at render time")
            else:
                self.attribute(name, node.node, "|attr()")
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr in ESCAPE_CALLS:
            self.add(True, f"calls .{node.node.attr}(): runs commands or code in the renderer's process")
        elif isinstance(node, nodes.Import | nodes.FromImport):
            self.add(True, "{% import %}: loads another template into this one")
        elif isinstance(node, nodes.Include | nodes.Extends):
            self.add(False, f"{{% {type(node).__name__.lower()} %}}: reads another template")
        elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name in NEVER_USED - self.bound:
            self.add(False, f"names the global {node.name!r}, which no chat template needs (a known gadget)")
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and _DUNDER_PIECE.search(node.value):
            self.add(False, f"string constant {node.value[:40]!r} holds a piece of a dunder name")

    def attribute(self, name: str, base: nodes.Node | None, how: str) -> None:
        on = f" of {base.name!r}" if isinstance(base, nodes.Name) and base.name in GADGETS - self.bound else ""
        if _DUNDER.match(name) or (name.startswith("__") and len(name) > 2):
            self.add(True, f"{how} to {name!r}{on}: reaches Python internals (template injection)")
        elif name in ESCAPE_ATTRIBUTES:
            self.add(True, f"{how} to {name!r}{on}: walks to frames, globals or modules (template injection)")
        elif on:
            self.add(True, f"{how} to {name!r}{on}: a gadget global used as an object, not called")


def _builds_string(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Concat | nodes.Add | nodes.Mul):
        return True
    if isinstance(node, nodes.Filter) and node.name in _STRING_BUILDERS:
        return True
    return isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr in (
        "join", "format", "replace", "lower", "upper", "strip")


def _bounded(tree: nodes.Node) -> Iterator[nodes.Node]:
    stack = [tree]
    count = 0
    while stack and count < MAX_NODES:
        node = stack.pop()
        count += 1
        yield node
        stack.extend(node.iter_child_nodes())
