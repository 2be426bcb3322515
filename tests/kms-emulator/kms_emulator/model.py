"""botocore's KMS service model: operation list and request validation.

The model JSON is read straight from botocore's data directory (found without
importing botocore, which is slow under emulation) and stripped of its
documentation strings to keep memory small.  Shapes that Debian's botocore 1.29
predates (RotateKeyOnDemand, rotation periods) are added from the current AWS
API reference.
"""

import base64
import binascii
import importlib.util
import json
import os
import re

from .errors import KMSError

_SUPPLEMENT_SHAPES = {
    "RotateKeyOnDemandRequest": {
        "type": "structure", "required": ["KeyId"],
        "members": {"KeyId": {"shape": "KeyIdType"}}},
    "RotateKeyOnDemandResponse": {
        "type": "structure", "members": {"KeyId": {"shape": "KeyIdType"}}},
    "RotationPeriodInDaysType": {"type": "integer", "min": 90, "max": 2560},
}


def _model_path():
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("kms-emulator: python3-botocore is required")
    base = os.path.join(list(spec.submodule_search_locations)[0], "data", "kms")
    version = sorted(os.listdir(base))[-1]
    return os.path.join(base, version, "service-2.json")


def _strip_docs(node):
    if isinstance(node, dict):
        node.pop("documentation", None)
        for value in node.values():
            _strip_docs(value)


class ServiceModel:
    """Just enough of the model to name operations and validate input."""

    def __init__(self, path=None):
        path = path or _model_path()
        if path.endswith(".gz"):
            import gzip
            with gzip.open(path, "rt", encoding="utf-8") as f:
                raw = json.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        _strip_docs(raw)
        self.shapes = raw["shapes"]
        self.operations = raw["operations"]
        for name, shape in _SUPPLEMENT_SHAPES.items():
            self.shapes.setdefault(name, shape)
        self.operations.setdefault("RotateKeyOnDemand", {
            "name": "RotateKeyOnDemand",
            "input": {"shape": "RotateKeyOnDemandRequest"},
            "output": {"shape": "RotateKeyOnDemandResponse"}})
        members = self.shapes["EnableKeyRotationRequest"]["members"]
        members.setdefault("RotationPeriodInDays",
                           {"shape": "RotationPeriodInDaysType"})
        self._patterns = {}

    def has_operation(self, name):
        return name in self.operations

    def validate(self, operation, body):
        """Check `body` (decoded JSON) against the operation's input shape.

        Returns a copy with blobs base64-decoded to bytes.  Raises
        SerializationException for wrong JSON types or bad base64 and
        ValidationException (AWS wording) for constraint violations.
        """
        if not isinstance(body, dict):
            raise KMSError("SerializationException",
                           "Start of structure or map found where not expected.")
        shape_name = self.operations[operation]["input"]["shape"]
        problems = []
        value = self._check(self.shapes[shape_name], body, "", problems)
        if problems:
            count = len(problems)
            noun = "error" if count == 1 else "errors"
            raise KMSError("ValidationException",
                           f"{count} validation {noun} detected: "
                           + "; ".join(problems))
        return value

    # -- internals ---------------------------------------------------------

    def _check(self, shape, value, path, problems):
        kind = shape["type"]
        if kind == "structure":
            if not isinstance(value, dict):
                raise _serialization(path, "structure")
            out = {}
            for name in shape.get("required", []):
                if value.get(name) is None:
                    problems.append(f"Value null at '{_join(path, name)}' failed "
                                    "to satisfy constraint: Member must not be null")
            for name, member in shape.get("members", {}).items():
                if value.get(name) is None:
                    continue
                out[name] = self._check(self.shapes[member["shape"]], value[name],
                                        _join(path, name), problems)
            return out
        if kind == "list":
            if not isinstance(value, list):
                raise _serialization(path, "list")
            self._length(shape, len(value), value, path, problems)
            member = self.shapes[shape["member"]["shape"]]
            return [self._check(member, item, f"{path}.{i + 1}", problems)
                    for i, item in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise _serialization(path, "map")
            self._length(shape, len(value), value, path, problems)
            key_shape = self.shapes[shape["key"]["shape"]]
            val_shape = self.shapes[shape["value"]["shape"]]
            return {self._check(key_shape, k, path, problems):
                    self._check(val_shape, v, path, problems)
                    for k, v in value.items()}
        if kind == "string":
            if not isinstance(value, str):
                raise _serialization(path, "string")
            self._length(shape, len(value), value, path, problems)
            if "enum" in shape and value not in shape["enum"]:
                problems.append(f"{_value(shape, value)} at '{path}' failed to "
                                "satisfy constraint: Member must satisfy enum "
                                f"value set: [{', '.join(shape['enum'])}]")
            pattern = self._pattern(shape.get("pattern"))
            if pattern is not None and not pattern.fullmatch(value):
                problems.append(f"{_value(shape, value)} at '{path}' failed to "
                                "satisfy constraint: Member must satisfy regular "
                                f"expression pattern: {shape['pattern']}")
            return value
        if kind in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _serialization(path, "integer")
            if "min" in shape and value < shape["min"]:
                problems.append(f"Value '{value}' at '{path}' failed to satisfy "
                                "constraint: Member must have value greater than "
                                f"or equal to {shape['min']}")
            if "max" in shape and value > shape["max"]:
                problems.append(f"Value '{value}' at '{path}' failed to satisfy "
                                "constraint: Member must have value less than or "
                                f"equal to {shape['max']}")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _serialization(path, "boolean")
            return value
        if kind == "blob":
            if not isinstance(value, str):
                raise _serialization(path, "blob")
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise KMSError("SerializationException",
                               f"Could not decode base64 blob at '{path}'") from None
            self._length(shape, len(data), None, path, problems)
            return data
        if kind == "timestamp":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _serialization(path, "timestamp")
            return value
        return value

    def _length(self, shape, length, value, path, problems):
        shown = _value(shape, value)
        if "min" in shape and length < shape["min"]:
            problems.append(f"{shown} at '{path}' failed to satisfy constraint: "
                            "Member must have length greater than or equal to "
                            f"{shape['min']}")
        if "max" in shape and length > shape["max"]:
            problems.append(f"{shown} at '{path}' failed to satisfy constraint: "
                            "Member must have length less than or equal to "
                            f"{shape['max']}")

    def _pattern(self, text):
        if not text:
            return None
        if text not in self._patterns:
            try:
                self._patterns[text] = re.compile(text)
            except re.error:
                self._patterns[text] = None
        return self._patterns[text]


def _join(path, member):
    """AWS reports member paths in lowerCamelCase, dotted."""
    name = member[:1].lower() + member[1:]
    return f"{path}.{name}" if path else name


def _value(shape, value):
    # Sensitive members and blobs are never echoed back, as AWS does.
    if value is None or shape.get("sensitive") or not isinstance(value, str):
        return "Value"
    return f"Value '{value}'"


def _serialization(path, expected):
    return KMSError("SerializationException",
                    f"Unexpected JSON type at '{path or 'body'}': expected {expected}")
