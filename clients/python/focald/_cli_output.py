"""focalctl's output: a command's result as a table for people, or as JSON or CSV for scripts."""
import csv
import json
import math
import sys
from typing import Any, Mapping, Optional, Sequence, TextIO


def _cell(v: Any) -> str:
    """A value as table text: floats to 4 significant digits, None as '-', booleans as yes/no."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return "%.4g" % v
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False) if v else "-"
    return str(v)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        v = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        # text a spreadsheet would run as a formula (an id, a note, meta: anyone's strings): quoted as text,
        # as focald's own CSV export does (README "CSV injection")
        return "'" + v
    return v


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Out:
    """Writes a command's result in the chosen format: table (default), json or csv."""

    def __init__(self, fmt: str, stream: Optional[TextIO] = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stdout

    def json(self, doc: Any) -> None:
        json.dump(doc, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")

    def table(self, rows: Sequence[Mapping[str, Any]], cols: Sequence[str], headers: Optional[Sequence[str]] = None,
              max_width: int = 48) -> None:
        """rows: dicts; cols: keys in order; headers: column titles (default the keys)."""
        headers = headers or list(cols)
        if self.fmt == "csv":
            w = csv.writer(self.stream, lineterminator="\n")
            w.writerow(headers)
            for r in rows:
                w.writerow([_csv_cell(r.get(c)) for c in cols])
            return
        cells = [[_cell(r.get(c)) for c in cols] for r in rows]
        cells = [[c if len(c) <= max_width else c[:max_width - 3] + "..." for c in row] for row in cells]
        right = [bool(rows) and all(_numeric(r.get(c)) or r.get(c) is None for r in rows) for c in cols]
        widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

        def line(vals: Sequence[str]) -> str:
            parts = [v.rjust(widths[i]) if right[i] else v.ljust(widths[i]) for i, v in enumerate(vals)]
            return "  ".join(parts).rstrip()

        self.stream.write(line(headers) + "\n")
        for row in cells:
            self.stream.write(line(row) + "\n")

    def fields(self, doc: Mapping[str, Any], keys: Sequence[str]) -> None:
        """A record as 'key: value' lines (table format) or a one-row CSV."""
        if self.fmt == "csv":
            self.table([doc], keys)
            return
        width = max(len(k) for k in keys)
        for k in keys:
            self.stream.write("%s  %s\n" % ((k + ":").ljust(width + 1), _cell(doc.get(k))))

    def text(self, s: str) -> None:
        self.stream.write(s + "\n")
