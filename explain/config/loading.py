"""Reading an experiment file: bounded, safe YAML (no object tags, no duplicate keys, aliases
and nesting bounded), command-line overrides, one line per problem naming the file and key,
and ``resolved`` copies of a config for what a run resolves (layer names, class names)."""


from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import (BaseModel, ValidationError)

from explain.errors import ExplainError
from explain.names import quote, short, suggest
from explain.runlock import RUN_MARKER
from explain.config.schema import Config
from explain.config.sections import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, MethodSpec, MetricSpec

MAX_CONFIG_TEXT = 2**20  # characters of a config's values and keys after alias expansion


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {quote(key)} is given twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """An integer; one over Python's digit limit (4300) is a YAML error on its line."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"the integer {short(str(node.value), 40)} has "
                            f"{len(str(node.value))} characters; too many digits",
                node.start_mark) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _expansion_problem(node: yaml.Node) -> Optional[str]:
    """What the YAML asks for once its aliases are expanded, when it is more than
    MAX_CONFIG_NODES values or MAX_CONFIG_TEXT characters of them, else None; counting stops
    past either bound. A 104 KB config naming one 100 KB string 1,000 times under a detector's
    builder_args (which takes any keyword) wrote config.json and summary.json of 96 MB each
    and held 1.2 GB; 256 KiB reached 3.5 GB a file."""
    count, chars, todo = 0, 0, [node]
    while todo and count <= MAX_CONFIG_NODES and chars <= MAX_CONFIG_TEXT:
        item = todo.pop()
        count += 1
        if isinstance(item, yaml.MappingNode):
            todo.extend(part for pair in item.value for part in pair)
        elif isinstance(item, yaml.SequenceNode):
            todo.extend(item.value)
        elif isinstance(item, yaml.ScalarNode):
            chars += len(item.value)
    if count > MAX_CONFIG_NODES:
        return f"more than {MAX_CONFIG_NODES} values (aliases nested too deep)"
    if chars > MAX_CONFIG_TEXT:
        return f"more than {MAX_CONFIG_TEXT // 2**20} MiB of text (aliases repeating a long value)"
    return None


MAX_NESTING = 32  # brackets or indentation levels; a config needs four or five


def nesting_problem(text: str) -> Optional[str]:
    """Whether the text nests deeper than MAX_NESTING, found by counting before parsing
    (PyYAML's time grows with the depth of what is still open)."""
    depth, quote_char = 0, None
    for char in text:
        if quote_char:
            quote_char = None if char == quote_char else quote_char
        elif char in "'\"":
            quote_char = char
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return f"brackets nested more than {MAX_NESTING} deep"
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "\n":
            quote_char = None
    indents = {len(line) - len(line.lstrip(" -")) for line in text.splitlines() if line.strip()}
    if len(indents) > MAX_NESTING:
        return f"more than {MAX_NESTING} levels of indentation"
    return None


def read_yaml(text: str, where: str) -> Any:
    """Parse a config's text safely: no tags that build objects, no duplicate keys, and
    aliases and nesting bounded (a 'billion laughs' file is refused, not expanded)."""
    deep = nesting_problem(text)
    if deep:
        raise ExplainError(f"{where}: the YAML has {deep}; a config is a few levels deep")
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _expansion_problem(node)
        if problem:
            raise ExplainError(f"{where}: the YAML expands to {problem}; write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExplainError(f"{where}: {line}YAML syntax error: {problem[:200]}") from None
    except RecursionError:
        raise ExplainError(f"{where}: the YAML is nested too deep") from None
    finally:
        if loader is not None:
            loader.dispose()


_DICT_FIELDS = {"classes", "arch_args", "builder_args"}


def _clean_loc(loc: tuple) -> tuple[str, Any]:
    """pydantic's error location written as the file's keys ('preprocess.size', 'methods[1]'),
    without the labels pydantic adds inside unions ('int', 'tuple[int, int]'); and the section
    the last key belongs to (for 'did you mean')."""
    out, model, parent, item_model, in_dict = "", Config, Config, None, False
    for part in loc:
        if isinstance(part, int):
            out, model = out + f"[{part}]", item_model
            continue
        if in_dict:  # a key of a free-form mapping (a class name, a builder argument)
            out, model, in_dict = out + f".{part}", None, False
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            break  # a pydantic label inside a union: the key is complete
        part = part if len(str(part)) <= 40 else str(part)[:37] + "..."
        out, parent = (out + f".{part}" if out else str(part)), model
        if part not in fields:
            model = None
            continue
        ann = fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        item_model = {"methods": MethodSpec, "metrics": MetricSpec}.get(part)
        in_dict = part in _DICT_FIELDS
    return out, parent


MISSING_HINTS = {  # what to write where a required key is missing
    "target_layers": " (e.g. target_layers: auto; explain layers CONFIG lists the layers)",
    "methods": " (e.g. methods: [gradcam, layercam])",
    "model": " (e.g. model: {file: torch_alex.pth}, a file saved with torch.save; docs/models.md "
             "lists the other sources)",
    "images": " (e.g. images: [cat.jpg, photos/], files and folders relative to the config)",
}


def _problem_line(error: dict) -> tuple[str, str]:
    loc, parent = _clean_loc(tuple(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        fields = [k for k in getattr(parent, "model_fields", {}) if k != "source"]
        return loc, f"unknown key {quote(key)}{suggest(key[:100], fields)}"
    if kind == "missing":
        return loc, "required key is missing" + MISSING_HINTS.get(loc, "")
    if kind == "dict_type" and loc == "classes":
        return loc, (f"a mapping of name to output index, e.g. classes: {{cat: 0, dog: 1}} "
                     f"(got {quote(error.get('input'))})")
    msg = error["msg"].removeprefix("Value error, ")
    if kind != "value_error" and "input" in error:
        msg += f" (got {quote(error['input'])})"
    return loc, msg


def names_a_field(message: str) -> bool:
    """Whether a message starts with the config field it is about ('targets: ...',
    'target_layers[0]: ...', 'classes.dog: ...'), so nothing like 'config:' goes before it."""
    field = message.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]
    return ":" in message and field in Config.model_fields


def attribute(exc: ExplainError, config: Any, overrides: dict[str, Any], origin: str) -> None:
    """Rewrite ``exc``'s lines about a field of the config file, ``<file>: <field>: ...``: the
    file as the user gave it (planning errors name it resolved) and, when ``origin`` (the
    command line, the call's arguments) set that field, ``(<key> from <origin>)``: the value
    is not in the file. Other lines are kept; the exception keeps its type."""
    if not isinstance(config, (str, os.PathLike)):
        return
    given = os.fspath(config)
    exc.args = (_attributed(exc.message, given, overrides, origin),)
    exc.details = tuple(_attributed(line, given, overrides, origin) for line in exc.details)


def _attributed(line: str, config: str, overrides: dict[str, Any], origin: str) -> str:
    """One line: the file as typed, and the key ``origin`` set when the line is about it or
    about a field inside it (not about a whole section one of its keys was set in: a
    missing 'model.file' is the file's, whatever --set model.trust said)."""
    forms = sorted({config, str(Path(config)), str(Path(config).resolve())}, key=len,
                   reverse=True)  # './x.yaml' is printed 'x.yaml' by the loader
    for form in forms:
        if line.startswith(form + ": "):
            rest = line[len(form) + 2:]
            break
    else:
        return line
    field = re.sub(r"\[\d+\]", "", rest.split(":", 1)[0]) if ":" in rest else ""
    keys = [key for key in overrides if field == key or field.startswith(key + ".")] \
        if field else []
    return f"{config}{f' ({keys[0]} from {origin})' if keys else ''}: {rest}"


def explain_validation(err: ValidationError, where: str) -> ExplainError:
    """Every problem pydantic found, one line each, each starting with the file and key.

    A union (``preprocess.size``: a number or a pair) fails once per alternative; only the
    first message per key is kept."""
    problems: dict[str, tuple[int, str]] = {}
    for error in err.errors():
        loc, msg = _problem_line(error)
        depth = len(error["loc"])  # the deeper a union's error, the closer it is to the input
        if loc not in problems or depth > problems[loc][0]:
            problems[loc] = (depth, msg)
    problems = {loc: msg for loc, (_, msg) in problems.items()}
    for loc, msg in list(problems.items()):  # 'target_layer': a misspelt key, not two problems
        meant = re.search(r"^unknown key .* did you mean '([^']+)'\?", msg)
        if meant:
            missing = f"{loc.rpartition('.')[0]}.{meant.group(1)}".lstrip(".")
            if problems.get(missing, "").startswith("required key is missing"):
                del problems[missing]
    lines = [f"{where}: {msg}" if not loc and names_a_field(msg) else
             f"{where}: {loc or 'config'}: {msg}" for loc, msg in problems.items()]
    if len(lines) == 1:
        return ExplainError(lines[0])
    return ExplainError(f"{len(lines)} problems in {where}:", details=lines)


def parse_value(text: str) -> Any:
    """A --set value as YAML would read it ('3' -> 3, 'true' -> True, '[a, b]' -> list)."""
    try:
        return read_yaml(text, "--set")
    except ExplainError:
        return text


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set data['a']['b'] = value for 'a.b', creating sections as needed. A list is set
    whole: 'images.0' made ``images`` a section {'0': ...} ('images: entry 0: unknown key')."""
    keys = dotted.split(".")
    node = data
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node.get(key), list):
            where = ".".join(keys[:depth + 1])
            raise ExplainError(f"{dotted}: {where} is a list, set whole (e.g. {where}=[a, b]); "
                               f"its items cannot be set one by one")
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def read_bounded_bytes(path: Path, limit: int, what: str) -> bytes:
    """A file of at most ``limit`` bytes (``what``: 'a config', 'a list'), read whole, once:
    its size is checked on the open file before reading, and no more than ``limit`` + 1 bytes
    are ever read (a file that grows meanwhile, or a device, is refused the same way)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise ExplainError(f"{path}: {max(size, len(data))} bytes; {what} is at most {limit} "
                           f"bytes")
    return data


def read_bounded_text(path: Path, limit: int, what: str, encoding: str = "utf-8") -> str:
    """A text file of at most ``limit`` bytes (``what``: 'a config', 'a list'), read whole;
    one-line ExplainError naming it when it is larger or not UTF-8 text (a NUL character
    means UTF-16 or a binary file, which would otherwise decode as UTF-8)."""
    try:
        text = read_bounded_bytes(path, limit, what).decode(encoding)
    except UnicodeDecodeError as exc:
        raise ExplainError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    if "\x00" in text:
        raise ExplainError(f"{path}: not a UTF-8 text file (it holds NUL characters: UTF-16, "
                           f"or not text at all)")
    return text


def _not_a_config(path: Path) -> str:
    """What is at ``path`` instead of a config file, and what the user may have meant."""
    try:
        if (path / RUN_MARKER).exists():
            return (f"a results folder, not a config file: give the config that made it "
                    f"(`explain report {shlex.quote(str(path))}` rebuilds its report)")
        if path.is_dir():
            return "a folder, not a config file"
    except OSError:
        pass
    return "config file not found"


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None,
                defaults: Optional[dict[str, Any]] = None) -> Config:
    """Read, override and validate an experiment file; raise ExplainError on any problem.
    ``defaults``: top-level keys filled in where the file has none (``explain layers``
    lists the layers of a config that does not name its target layers yet)."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise ExplainError(f"{short(path)}: {exc.strerror}") from None
    if not found:
        raise ExplainError(f"{short(path)}: {_not_a_config(path)}")
    text = read_bounded_text(path, MAX_CONFIG_BYTES, "a config")
    data = read_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ExplainError(f"{path}: the top level must be a mapping of keys (model, images, ...)")
    for key, value in (defaults or {}).items():
        data.setdefault(key, value)
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, str(path)) from None
    return cfg.model_copy(update={"source": path.resolve()})


def resolved(cfg: Config, field: str, value: Any) -> Config:
    """A copy of ``cfg`` whose ``field`` is what the run resolved it to (the layer names
    'auto' stands for, the class names the model carries), validated as if the file had
    said so; the config itself is never changed."""
    data = cfg.model_dump()
    data[field] = value
    try:
        new = Config.model_validate(data)
    except ValidationError as err:
        raise explain_validation(err, f"{field} as resolved") from None
    return new.model_copy(update={"source": cfg.source})
