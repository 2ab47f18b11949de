"""``POST /api/v1/specification/validate/``: check an environment.yaml without submitting it.

The create/edit page calls this as the user types, and shows the problem at its exact place:
YAML syntax errors carry their line and column already; for the others (a bad match spec, a
channel that is not allowed, a bad name) the message starts with the field's path, such as
``dependencies[2]`` or ``dependencies[3].pip[0]``, which is mapped back to the line and column of
that value in the text. An invalid file is a successful check (200 with ``valid: false``), not an
error of the request.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .. import api
from ..exceptions import ValidationError
from ..naming import validate_name
from .base import BaseHandler, run_sync

_AT_LINE = re.compile(r" at line (\d+), column (\d+)")
_FIELD = re.compile(r"^([A-Za-z_][\w-]*(?:\[\d+\]|\.[A-Za-z_][\w-]*)*): ")
_PART = re.compile(r"\[(\d+)\]|\.?([A-Za-z_][\w-]*)")


def locate(text: str, message: str) -> tuple[int, int] | tuple[None, None]:
    """1-based (line, column) that ``message`` is about, or (None, None) if it names no place."""
    at = _AT_LINE.search(message)
    if at:
        return int(at.group(1)), int(at.group(2))
    field = _FIELD.match(message)
    if not field:
        return None, None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None, None
    for index, key in _PART.findall(field.group(1)):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        elif key and isinstance(node, yaml.SequenceNode):
            # ``pip`` inside ``dependencies`` is a mapping item of the list: find the one holding it.
            node = next((v for item in node.value if isinstance(item, yaml.MappingNode)
                         for k, v in item.value if k.value == key), None)
        elif key and isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        else:
            node = None
        if node is None:
            return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


class SpecificationValidateHandler(BaseHandler):
    async def post(self) -> None:
        """Body ``{"specification": "<environment.yaml text>", "namespace"?: str}`` →
        ``{valid, message, line, column, name}`` (``name`` from the file when it is valid)."""
        self.require_authenticated()
        body = self.json_body()
        text: Any = body.get("specification")
        if not isinstance(text, str):
            raise ValidationError("'specification' is required: the environment.yaml text")
        namespace = validate_name(body.get("namespace") or self.identity.primary_namespace, "namespace")
        try:
            # As on submission: the settings of the environment the file would create apply.
            spec = await run_sync(api.prepare_specification, self.store, text, namespace=namespace)
        except ValidationError as exc:  # SpecificationError and bad names alike
            line, column = locate(text, str(exc))
            self.ok({"valid": False, "message": str(exc), "line": line, "column": column, "name": None})
            return
        # Valid, but what it asks for and will not get (``prefix:``) is said, as on submission.
        warnings = "; ".join(f"warning: {w}" for w in spec.warnings) or None
        self.ok({"valid": True, "message": warnings, "line": None, "column": None, "name": spec.name})


HANDLERS = [(r"/api/v1/specification/validate/", SpecificationValidateHandler)]
