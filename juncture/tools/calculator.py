"""A calculator for arithmetic expressions, evaluated by walking the `ast` (never `eval`).

Integer results are capped in size so `9**9**9` is refused up front instead of hanging.
"""

from __future__ import annotations

import ast
import math
import operator

from juncture.tools.base import ToolResult

MAX_QUERY_CHARS = 1000
MAX_INT_BITS = 10_000  # ~3000 digits; stays below Python's int-to-str digit limit

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class CalcError(ValueError):
    """The expression is not allowed or cannot be evaluated; `kind` is the ToolResult error."""

    def __init__(self, message: str, kind: str = "bad_query"):
        super().__init__(message)
        self.kind = kind


def _check_size(value: int | float | complex) -> int | float:
    if isinstance(value, complex):
        raise CalcError("result is not a real number", "exception")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalcError("result too large", "exception")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("result is not a finite number", "exception")
    return value


def _power(base: int | float, exp: int | float) -> int | float:
    if isinstance(base, int) and isinstance(exp, int) and (abs(base).bit_length() - 1) * exp > MAX_INT_BITS:
        raise CalcError("result too large", "exception")
    return base**exp


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        op = _power if isinstance(node.op, ast.Pow) else _BINARY[type(node.op)]
        try:
            return _check_size(op(left, right))
        except ZeroDivisionError:
            raise CalcError("division by zero", "exception") from None
        except OverflowError:
            raise CalcError("result too large", "exception") from None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise CalcError("unsupported operator ^ (use ** for powers)")
    raise CalcError(f"unsupported expression: {type(node).__name__} (only numbers and + - * / // % **)")


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression; raises CalcError with a message for the model."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalcError("not a valid arithmetic expression", "syntax") from None
    try:
        return _eval(tree.body)
    except RecursionError:
        raise CalcError("expression is nested too deeply") from None


class CalculatorTool:
    name = "calculator"

    def __call__(self, query: str) -> ToolResult:
        if not isinstance(query, str):
            return ToolResult("error: the query must be text", ok=False, error="bad_query")
        if not query.strip():
            return ToolResult("error: empty expression", ok=False, error="empty")
        if len(query) > MAX_QUERY_CHARS:
            return ToolResult(
                f"error: expression longer than {MAX_QUERY_CHARS} characters", False, "bad_query"
            )
        try:
            value = evaluate(query)
        except CalcError as e:
            return ToolResult(f"error: {e}", ok=False, error=e.kind)
        except Exception as e:  # a tool must never raise into the agent loop
            return ToolResult(f"error: {type(e).__name__}: {e}", ok=False, error="crash")
        return ToolResult(repr(value), ok=True)
