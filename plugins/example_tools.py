"""Example plugin: copy this file to start your own (see docs/plugins.md).

Two small offline tools. A tool is a plain function: its name, docstring and
type hints become what the model sees; raising ToolError gives the model a
clean error message instead of a traceback.
"""
from __future__ import annotations

import ast
import math
import operator
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentd import ToolError, hookimpl

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
              "log": math.log, "sin": math.sin, "cos": math.cos, "tan": math.tan}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION = 500
MAX_EXPONENT = 1000   # 10 ** 10 ** 10 would take forever and all the memory


def _power(base, exponent):
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent too large (limit {MAX_EXPONENT})")
    if isinstance(base, int) and abs(exponent) * base.bit_length() > 100_000:
        raise ToolError("result too large")  # ((10**999)**999)**999 has a billion digits
    return operator.pow(base, exponent)


def _eval(node):
    """Evaluate an arithmetic AST node; anything that is not arithmetic is refused."""
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        return _power(left, right) if isinstance(node.op, ast.Pow) else _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        return _FUNCTIONS[node.func.id](*[_eval(arg) for arg in node.args])
    raise ToolError(f"not allowed in an expression: {ast.dump(node)[:60]}")


def calculator(expression: str) -> dict:
    """Evaluate an arithmetic expression, e.g. "(2 + 3) * 4 / sqrt(16)". Supports + - * / // % **,
    parentheses, pi, e and sqrt, abs, round, min, max, log, sin, cos, tan."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression too long (limit {MAX_EXPRESSION} characters)")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot compute that: {exc}") from None
    return {"expression": expression, "result": value}


def current_time(timezone: str = "UTC") -> dict:
    """The current date and time in an IANA time zone, e.g. "Europe/Paris" (default UTC)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {timezone!r}; use an IANA name like 'Europe/Paris'") from None
    now = datetime.now(zone)
    return {"timezone": timezone, "iso": now.isoformat(timespec="seconds"),
            "weekday": now.strftime("%A"), "utc_offset": now.strftime("%z")}


@hookimpl(trylast=True)
def register_tools(register):
    register(calculator)
    register(current_time)
