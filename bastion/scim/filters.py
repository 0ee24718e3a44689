"""SCIM filters (RFC 7644 §3.4.2.2) as SQL: scim2-models parses and checks a filter, this module turns its tree
into one SQLAlchemy WHERE clause over the columns a served resource is made of (scim.service says which).

Every clause is definite (true or false, never SQL NULL), so `not`, `ne` and `or` mean what scim2-models'
`ScimFilter.match` means: a missing value equals nothing, `ne` holds for it, and a multi-valued attribute
matches when any of its values does (`ne`: when none equals the operand). Strings are compared as
`AttributeBinding.comparable` prepares them (lower-cased unless the attribute is caseExact, RFC 7643 §2.2).
An attribute the model declares but the service has no column for is refused with invalidFilter: nothing is
ever filtered in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scim2_models import InvalidFilterException, ScimFilter
from scim2_models.path import (
    AttributeBinding,
    AttrPath,
    CompareOperator,
    Comparison,
    FilterVisitor,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
    coerce_value,
)
from sqlalchemy import and_, false, func, literal, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement

Clause = ColumnElement[bool]
Predicate = Callable[[ColumnElement[Any]], Clause]


@dataclass(frozen=True)
class Scalar:
    """A single-valued attribute: `value` as served, `present` true exactly when the resource carries it."""

    value: ColumnElement[Any]
    present: Clause
    folded: bool = False  # the column already holds the lower-cased form (users.name_lower)
    decode: Callable[[str], int | None] | None = None  # an id: the public id → the primary key it names


@dataclass(frozen=True)
class Many:
    """A multi-valued attribute: `any(p)` is true when some served value v satisfies p(v) (v never NULL)."""

    any: Callable[[Predicate], Clause]
    decode: Callable[[str], int | None] | None = None


Column = Scalar | Many
# The service's columns of one resource type, by (attribute, sub-attribute) as scim2-models names the Python
# fields: ("user_name", None), ("emails", "value"), ("meta", "last_modified")…
Columns = dict[tuple[str, str | None], Column]


def ends_with(text: ColumnElement[Any], suffix: str) -> Clause:
    """`text` ends with `suffix`, code point for code point (LIKE would fold case on SQLite)."""
    return func.substr(text, func.length(text) - len(suffix) + 1) == suffix if suffix else true()


def _scim_name(binding: AttributeBinding) -> str:
    return binding.urn.rsplit(":", 1)[-1]


class _Connectives(FilterVisitor[Clause]):
    """`not`, `and` and `or` as SQL, for the whole filter and for a value selection's inner one alike."""

    def visit_not(self, node: Not) -> Clause:
        return not_(self.visit(node.expr))

    def visit_logical_expr(self, node: LogicalExpr) -> Clause:
        terms = [self.visit(t) for t in node.terms]
        return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)


class SqlFilter(_Connectives):
    """One filter over one resource type → one clause. `dialect` picks the substring function."""

    def __init__(self, scim_filter: ScimFilter[Any], columns: Columns, dialect: str) -> None:
        self.filter = scim_filter
        self.columns = columns
        self.dialect = dialect

    def clause(self) -> Clause:
        return self.visit(self.filter.ast)

    # ---- attributes ----------------------------------------------------------------------------------------

    def _column(self, binding: AttributeBinding) -> Column:
        column = self.columns.get((binding.field_name, binding.sub_field_name))
        if column is None:
            supported = sorted(set(self._supported()))
            raise InvalidFilterException(detail=f"Filtering on {_scim_name(binding)} is not supported; filters may "
                                                f"name {', '.join(supported)}")
        return column

    def _supported(self) -> list[str]:
        model = self.filter.model
        names = []
        for field, sub in self.columns:
            alias = model._scim_name(field) if model is not None else field  # type: ignore[attr-defined]
            if sub is not None:
                inner = model.get_field_root_type(field) if model is not None else None  # type: ignore[attr-defined]
                alias += "." + (inner._scim_name(sub) if inner is not None else sub)
            names.append(alias)
        return names

    # ---- comparisons ---------------------------------------------------------------------------------------

    def _fold(self, value: ColumnElement[Any], binding: AttributeBinding, folded: bool) -> ColumnElement[Any]:
        return value if binding.case_exact or folded else func.lower(value)

    def _compare(self, value: ColumnElement[Any], op: CompareOperator, operand: Any, binding: AttributeBinding,
                 *, folded: bool = False) -> Clause:
        """`value op operand` for a value that is present (not NULL): a definite clause."""
        if isinstance(operand, bool):  # scim2-models allows only eq and ne on a boolean; `value` is definite
            return value if operand == (op == CompareOperator.eq) else not_(value)
        if isinstance(operand, datetime) or (binding.target_type is datetime and not isinstance(operand, str)):
            return self._ordered(value, op, operand)
        if binding.target_type is datetime:  # co/sw/ew on a dateTime compare a string with a date: never true
            return false() if op != CompareOperator.ne else true()
        if not isinstance(operand, str):
            raise InvalidFilterException(detail=f"{_scim_name(binding)} cannot be compared with {operand!r}")
        try:
            key = binding.comparable(operand)
        except ValueError:
            return true() if op == CompareOperator.ne else false()
        text = self._fold(value, binding, folded)
        if op == CompareOperator.co:
            position = func.instr(text, key) if self.dialect == "sqlite" else func.strpos(text, key)
            return position > 0
        if op == CompareOperator.sw:
            return func.substr(text, 1, len(key)) == key
        if op == CompareOperator.ew:
            return ends_with(text, key)
        if op in (CompareOperator.eq, CompareOperator.ne):
            return text == key if op == CompareOperator.eq else text != key
        # Ordering compares code points, as Python does: SQLite's default BINARY collation does over UTF-8, and
        # PostgreSQL's "C" collation does (its default collation follows the locale).
        return self._ordered(text if self.dialect == "sqlite" else text.collate("C"), op, key)

    @staticmethod
    def _ordered(value: ColumnElement[Any], op: CompareOperator, operand: Any) -> Clause:
        if op == CompareOperator.eq:
            return value == operand
        if op == CompareOperator.ne:
            return value != operand
        if op == CompareOperator.gt:
            return value > operand
        if op == CompareOperator.ge:
            return value >= operand
        if op == CompareOperator.lt:
            return value < operand
        if op == CompareOperator.le:
            return value <= operand
        raise InvalidFilterException(detail=f"{op.value} does not apply to this attribute")

    def _id_operand(self, decode: Callable[[str], int | None], op: CompareOperator, operand: Any,
                    binding: AttributeBinding) -> int | None:
        if op not in (CompareOperator.eq, CompareOperator.ne):
            raise InvalidFilterException(detail=f"{_scim_name(binding)} is compared with eq or ne only")
        return decode(operand) if isinstance(operand, str) else None

    def visit_comparison(self, node: Comparison) -> Clause:
        binding = self.filter.resolve_comparison(node.attr_path, strict=False)
        if binding is None:
            return false()  # an attribute the resource type does not have matches nothing (RFC 7644 §3.4.2.1)
        column = self._column(binding)
        operand = coerce_value(binding, node.value, node.op)
        op = node.op
        if isinstance(operand, datetime) and operand.tzinfo is None and isinstance(column, Scalar):
            # A dateTime without a zone is no instant: as in match(), it equals none and orders against none.
            return column.present if op == CompareOperator.ne else false()
        if isinstance(column, Many):
            if operand is None:  # "emails eq null": no value at all
                return not_(column.any(lambda _v: true())) if op == CompareOperator.eq else column.any(
                    lambda _v: true())
            if column.decode is not None:
                pk = self._id_operand(column.decode, op, operand, binding)
                some = false() if pk is None else column.any(lambda v: v == literal(pk))
            else:
                test = CompareOperator.eq if op == CompareOperator.ne else op
                some = column.any(lambda v: self._compare(v, test, operand, binding))
            return not_(some) if op == CompareOperator.ne else some
        if operand is None:
            if op == CompareOperator.eq:
                return not_(column.present)
            return column.present if op == CompareOperator.ne else false()
        if column.decode is not None:
            pk = self._id_operand(column.decode, op, operand, binding)
            equal = and_(column.present, column.value == literal(pk)) if pk is not None else false()
            return not_(equal) if op == CompareOperator.ne else equal
        if op == CompareOperator.ne:
            return or_(not_(column.present),
                       not_(self._compare(column.value, CompareOperator.eq, operand, binding, folded=column.folded)))
        return and_(column.present, self._compare(column.value, op, operand, binding, folded=column.folded))

    def visit_present(self, node: Present) -> Clause:
        binding = self.filter.resolve_comparison(node.attr_path, strict=False)
        if binding is None:
            return false()
        column = self._column(binding)
        if isinstance(column, Many):
            return column.any(lambda v: v != "" if column.decode is None else true())
        if binding.target_type is str and column.decode is None:
            return and_(column.present, column.value != "")
        return column.present

    def visit_value_path(self, node: ValuePath) -> Clause:
        """`emails[value eq "x"]`: some value satisfies the inner filter, which may name `value` only."""
        head = self.filter.resolve(node.attr_path, strict=False)
        if head is None:
            return false()
        binding = self.filter.resolve_comparison(AttrPath(node.attr_path.attr, "value", node.attr_path.uri),
                                                 strict=False)
        column = self.columns.get((head.field_name, "value"))
        if binding is None or not isinstance(column, Many):
            raise InvalidFilterException(detail=f"Filtering on {node.attr_path}[…] is not supported")
        return column.any(lambda v: _ValueFilter(self, column, binding, v).visit(node.val_filter))


class _ValueFilter(_Connectives):
    """The inner filter of a value selection, over one value `v` of a multi-valued attribute."""

    def __init__(self, outer: SqlFilter, column: Many, binding: AttributeBinding, v: ColumnElement[Any]) -> None:
        self.outer, self.column, self.binding, self.v = outer, column, binding, v

    def _check(self, path: AttrPath) -> None:
        if path.attr.lower() != "value" or path.sub_attr or path.uri:
            raise InvalidFilterException(detail=f"Inside […] a filter may name only 'value' (not {path})")

    def visit_comparison(self, node: Comparison) -> Clause:
        self._check(node.attr_path)
        operand = coerce_value(self.binding, node.value, node.op)
        if operand is None:
            return false() if node.op == CompareOperator.eq else true()
        if self.column.decode is not None:
            pk = self.outer._id_operand(self.column.decode, node.op, operand, self.binding)
            equal = self.v == literal(pk) if pk is not None else false()
            return not_(equal) if node.op == CompareOperator.ne else equal
        return self.outer._compare(self.v, node.op, operand, self.binding)

    def visit_present(self, node: Present) -> Clause:
        self._check(node.attr_path)
        return self.v != "" if self.column.decode is None else true()

    def visit_value_path(self, node: ValuePath) -> Clause:
        raise InvalidFilterException(detail="A value selection cannot be nested in another")


def where(scim_filter: ScimFilter[Any] | None, model: type[Any], columns: Columns, dialect: str) -> Clause:
    """The clause of `scim_filter` for resources of `model` (a filter bound to several types is bound again to
    this one: an attribute only the other type has is false here, RFC 7644 §3.4.2.1)."""
    if scim_filter is None:
        return true()
    if scim_filter.models != (model,):
        scim_filter = ScimFilter[model](scim_filter.ast)  # type: ignore[valid-type]
    return SqlFilter(scim_filter, columns, dialect).clause()

