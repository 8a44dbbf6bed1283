"""Types shared by the three kinds."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes quantity of bytes: a non-negative number with an optional binary or decimal
# suffix (64Mi, 1Gi, 500M, 1048576); no milli or exponent forms, which make no sense for bytes.
_BYTES = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
BYTES_PATTERN = f"^{_BYTES.pattern}$"
_SUFFIX_BYTES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_duration(text: str) -> float:
    """Seconds of a Go-style duration such as `90s`, `5m` or `1h30m`."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def Duration(description: str, default: str | None = None, alias: str | None = None) -> Any:
    """A Field for a duration string (validated by the API server's pattern)."""
    return Field(
        default=default,
        description=description,
        pattern=DURATION_PATTERN,
        max_length=32,
        alias=alias,
    )


def parse_bytes(text: str) -> int:
    """Bytes of a quantity such as `64Mi` or `1G`, rounded up like Kubernetes does."""
    match = _BYTES.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid byte quantity {text!r}: use e.g. 64Mi, 1Gi, 500M")
    number, suffix = match.groups()
    exact = Decimal(number) * _SUFFIX_BYTES[suffix or ""]
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def Bytes(description: str, default: str, alias: str) -> Any:
    """A Field for a positive quantity of bytes, validated by the API server (pattern and
    CEL): 0 is refused because the session server reads 0 as "no limit"."""
    return Field(
        default=default,
        description=description,
        pattern=BYTES_PATTERN,
        max_length=32,
        alias=alias,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
                    "message": "must be more than 0",
                }
            ]
        },
    )


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class SecretKeyRef(Model):
    name: str = Field(
        description="Name of a Secret in the same namespace.", max_length=253, pattern=NAME_PATTERN
    )
    key: str = Field(
        description="Key within the Secret.", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$"
    )


class SecretRef(Model):
    name: str = Field(
        description="Name of a Secret in the same namespace.", max_length=253, pattern=NAME_PATTERN
    )


class Condition(Model):
    type: str = Field(description="Type of condition, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="Machine-readable CamelCase reason.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: str | None = Field(
        default=None,
        alias="lastTransitionTime",
        description="When the status last changed (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        description="The .metadata.generation the condition was computed from.",
    )


class ResourceRequirements(Model):
    requests: dict[str, str] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 100m, memory: 256Mi}."
    )
    limits: dict[str, str] | None = Field(
        default=None, description="Maximum resources, e.g. {cpu: '1', memory: 1Gi}."
    )
