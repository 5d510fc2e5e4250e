"""The one parser of Prometheus text exposition (format 0.0.4) the tests use.

    m = Exposition.parse(text)          # raises ExpositionError on any malformed line
    m.value("cairn_s3_requests_total", operation="PutObject", status="200")   # exact series
    m.get("cairn_node_up", node="3")    # exact series, or None when absent
    m.total("cairn_repair_segments_total")   # sum over every label set of one name
    m.require("cairn_node_bytes_written_total", "cairn_node_shards_stored")

Lookups name a series exactly: the metric name as exported, and all of its labels
(`value`/`get`). `total` sums the series of one exact name whose labels include the given
ones, and fails when the name has no series at all, so a misspelt or unregistered name
cannot read as zero.

Every line is checked: a sample must be `name[{label="value",...}] value [timestamp]`,
`# HELP` and `# TYPE` lines must be well formed, and a series may appear only once. A line
that does not parse raises instead of being skipped, so a broken exporter fails the test
that reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FLOAT = re.compile(r"[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_TIMESTAMP = re.compile(r"-?\d+")
_BLANK = " \t"


class ExpositionError(ValueError):
    """A line of the exposition is not valid Prometheus text."""


class SeriesMissing(AssertionError):
    """A series the test expects is not in the exposition."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp: int | None = None

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, tuple(sorted(self.labels.items()))

    def __str__(self) -> str:
        return series_str(self.name, self.labels) + f" {self.value:g}"


def series_str(name: str, labels: dict[str, str]) -> str:
    """`name{a="1",b="2"}` (labels sorted), as in assertion messages."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


@dataclass
class Exposition:
    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Exposition":
        out = cls()
        seen: set = set()
        for lineno, line in enumerate(text.split("\n"), 1):
            try:
                if not line.strip(_BLANK):
                    continue
                if line.lstrip(_BLANK).startswith("#"):
                    out._comment(line.lstrip(_BLANK))
                    continue
                s = _sample(line)
            except ExpositionError as e:
                raise ExpositionError(f"line {lineno}: {e}: {line!r}") from None
            if s.key in seen:
                raise ExpositionError(f"line {lineno}: series repeated: {line!r}")
            seen.add(s.key)
            out.samples.append(s)
        return out

    def _comment(self, line: str):
        parts = line[1:].split(None, 2)
        if not parts or parts[0] not in ("HELP", "TYPE"):
            return  # a plain comment
        if len(parts) < 2 or not _NAME.fullmatch(parts[1]):
            raise ExpositionError(f"# {parts[0]} without a valid metric name")
        kind, name = parts[0], parts[1]
        rest = parts[2].strip(_BLANK) if len(parts) == 3 else ""
        if kind == "TYPE":
            if rest not in TYPES:
                raise ExpositionError(f"unknown metric type {rest!r}")
            if name in self.types:
                raise ExpositionError(f"second # TYPE for {name}")
            self.types[name] = rest
        else:
            if name in self.helps:
                raise ExpositionError(f"second # HELP for {name}")
            self.helps[name] = re.sub(r"\\([\\n])", lambda m: "\n" if m.group(1) == "n" else "\\", rest)

    # -- lookups -------------------------------------------------------------------------
    def names(self) -> set[str]:
        """Names of every series (histograms as their `_bucket`, `_sum`, `_count`)."""
        return {s.name for s in self.samples}

    def series(self, name: str) -> list[Sample]:
        """Every sample of the metric `name` (exact name)."""
        return [s for s in self.samples if s.name == name]

    def get(self, name: str, /, **labels: str) -> float | None:
        """The value of the series `name` with exactly these labels, None when absent."""
        want = {k: str(v) for k, v in labels.items()}
        for s in self.samples:
            if s.name == name and s.labels == want:
                return s.value
        return None

    def value(self, name: str, /, **labels: str) -> float:
        """The value of the series `name` with exactly these labels; fails when absent."""
        v = self.get(name, **labels)
        if v is None:
            raise SeriesMissing(
                f"{series_str(name, {k: str(x) for k, x in labels.items()})} not exported; "
                f"{self._present(name)}"
            )
        return v

    def total(self, name: str, /, **labels: str) -> float:
        """Sum of the series of `name` whose labels include `labels` (0 when none of them
        matches); fails when `name` has no series at all."""
        series = self.series(name)
        if not series:
            raise SeriesMissing(f"{name} not exported; {self._present(name)}")
        want = {k: str(v) for k, v in labels.items()}
        return sum(s.value for s in series if all(s.labels.get(k) == v for k, v in want.items()))

    def require(self, *names: str):
        """Fails unless every name has at least one series."""
        missing = sorted(n for n in names if not self.series(n))
        if missing:
            raise SeriesMissing(f"not exported: {missing}; exported: {sorted(self.names())}")

    def _present(self, name: str) -> str:
        same = self.series(name)
        if same:
            return "its series: " + ", ".join(str(s) for s in same)
        return f"no series of that name among {len(self.names())} names: {sorted(self.names())}"


def parse(text: str) -> Exposition:
    return Exposition.parse(text)


# ---------------------------------------------------------------------------------------


def _sample(line: str) -> Sample:
    m = _NAME.match(line)
    if not m:
        raise ExpositionError("no metric name")
    name, i = m.group(), m.end()
    labels: dict[str, str] = {}
    k = _skip_blank(line, i)
    if k < len(line) and line[k] == "{":
        labels, i = _labels(line, k + 1)
    j = _skip_blank(line, i)
    if j == i or j >= len(line):
        raise ExpositionError("no value")
    value_text, i = _token(line, j)
    if not _FLOAT.fullmatch(value_text):
        raise ExpositionError(f"value {value_text!r} is not a float")
    value = float(value_text)
    timestamp = None
    j = _skip_blank(line, i)
    if j < len(line):
        ts_text, i = _token(line, j)
        if not _TIMESTAMP.fullmatch(ts_text):
            raise ExpositionError(f"timestamp {ts_text!r} is not an integer")
        timestamp = int(ts_text)
        if _skip_blank(line, i) < len(line):
            raise ExpositionError("text after the timestamp")
    return Sample(name, labels, value, timestamp)


def _labels(line: str, i: int) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    while True:
        i = _skip_blank(line, i)
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = _LABEL_NAME.match(line, i)
        if not m:
            raise ExpositionError("bad label name")
        key = m.group()
        i = _skip_blank(line, m.end())
        if line[i : i + 1] != "=":
            raise ExpositionError(f"no '=' after label {key}")
        i = _skip_blank(line, i + 1)
        if line[i : i + 1] != '"':
            raise ExpositionError(f"label {key} has no quoted value")
        val, i = _quoted(line, i + 1)
        if key in labels:
            raise ExpositionError(f"label {key} given twice")
        labels[key] = val
        i = _skip_blank(line, i)
        if line[i : i + 1] == ",":
            i += 1
        elif line[i : i + 1] != "}":
            raise ExpositionError("labels not closed by '}'")


def _quoted(line: str, i: int) -> tuple[str, int]:
    out = []
    while i < len(line):
        c = line[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            nxt = line[i + 1 : i + 2]
            if nxt == "n":
                out.append("\n")
            elif nxt in ('"', "\\"):
                out.append(nxt)
            else:
                raise ExpositionError(f"bad escape \\{nxt} in a label value")
            i += 2
            continue
        out.append(c)
        i += 1
    raise ExpositionError("unterminated label value")


def _skip_blank(line: str, i: int) -> int:
    while i < len(line) and line[i] in _BLANK:
        i += 1
    return i


def _token(line: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(line) and line[j] not in _BLANK:
        j += 1
    return line[i:j], j
