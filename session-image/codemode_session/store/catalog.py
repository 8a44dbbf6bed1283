"""Turn a source folder's raw files into named, validated items of one kind.

The digest is computed from the raw text alone, before any parsing, so a
re-sync of unchanged content can be recognised without parsing thousands of
workflows. Validation errors name the file and the problem in one line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import yaml

from codemode_session.errors import ValidationError
from codemode_session.names import validate_package_spec, validate_tool_name
from codemode_session.workflow_model import Workflow, parse_workflow

Kind = Literal["workflows", "tools", "deps"]
KINDS: tuple[Kind, ...] = ("workflows", "tools", "deps")
DIGEST_VERSION = "codemode-store/1"
REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class Catalog:
    """Items of one kind: name -> text (for deps: spec -> spec)."""

    kind: Kind
    texts: dict[str, str]
    files: dict[str, str]  # name -> file it came from, for messages

    @property
    def digest(self) -> str:
        h = hashlib.sha256(f"{DIGEST_VERSION}\0{self.kind}\n".encode())
        for name in sorted(self.texts):
            body = hashlib.sha256(self.texts[name].encode()).hexdigest()
            h.update(f"{name}\0{body}\n".encode())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.texts)


def _decode(filename: str, data: bytes) -> str:
    """The file's text; a UTF-8 byte-order mark (Windows editors write one) is dropped."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{filename}: not UTF-8 text") from None


def _ignored(filename: str) -> bool:
    return filename.startswith(".") or filename == "__init__.py"


def relevant(kind: Kind) -> Callable[[str], bool]:
    """Which file names a source of `kind` is read for (nothing else is loaded)."""
    suffixes = {"workflows": (".py",), "tools": (".yaml", ".yml"), "deps": (".txt",)}[kind]

    def wanted(filename: str) -> bool:
        return filename.endswith(suffixes) and not _ignored(filename)

    return wanted


def build_catalog(kind: Kind, files: dict[str, bytes]) -> Catalog:
    """Select and name the files of `kind`; tools and deps are fully validated here."""
    if kind == "workflows":
        texts = {
            f[:-3]: _decode(f, data)
            for f, data in files.items()
            if f.endswith(".py") and not _ignored(f)
        }
        return Catalog(kind, texts, {name: f"{name}.py" for name in texts})
    if kind == "tools":
        return _tools(files)
    return _deps(files)


def _tools(files: dict[str, bytes]) -> Catalog:
    texts: dict[str, str] = {}
    origin: dict[str, str] = {}
    for filename in sorted(files):
        stem, dot, ext = filename.rpartition(".")
        if not dot or ext not in ("yaml", "yml") or _ignored(filename):
            continue
        if stem in texts:
            raise ValidationError(f"{filename}: tool {stem!r} is defined twice")
        try:
            validate_tool_name(stem)
        except ValidationError as exc:
            raise ValidationError(f"{filename}: {exc}") from None
        text = _decode(filename, files[filename])
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValidationError(f"{filename}: invalid YAML{where}") from None
        if not isinstance(data, dict):
            raise ValidationError(f"{filename}: a tool must be a YAML mapping")
        declared = data.get("name")
        if declared is not None and declared != stem:
            raise ValidationError(
                f"{filename}: declares name {declared!r} but the file name says {stem!r}"
            )
        texts[stem] = text
        origin[stem] = filename
    return Catalog("tools", texts, origin)


def _deps(files: dict[str, bytes]) -> Catalog:
    if REQUIREMENTS in files:
        filename = REQUIREMENTS
    else:
        txt = [f for f in files if f.endswith(".txt")]
        if len(txt) != 1:
            raise ValidationError(f"no {REQUIREMENTS} in the source")
        filename = txt[0]
    specs: dict[str, str] = {}
    for number, raw in enumerate(_decode(filename, files[filename]).splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        try:
            spec = validate_package_spec(line)
        except ValidationError as exc:
            raise ValidationError(f"{filename} line {number}: {exc}") from None
        specs[spec] = spec
    return Catalog("deps", specs, dict.fromkeys(specs, filename))


def parse_workflows(catalog: Catalog) -> dict[str, Workflow]:
    """Validate every workflow; the first bad file fails everything, named."""
    parsed: dict[str, Workflow] = {}
    for name in sorted(catalog.texts):
        try:
            parsed[name] = parse_workflow(name, catalog.texts[name])
        except ValidationError as exc:
            raise ValidationError(f"{catalog.files[name]}: {exc}") from None
    return parsed
