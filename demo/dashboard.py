"""The stack's CloudWatch dashboard, drawn locally from a `make demo` run: the panels are read from
template.yaml's `Dashboard` resource itself (so the picture has exactly the deployed dashboard's
panels, titles and series), the data from the EMF lines the functions printed into .demo/*.log.

    python3 demo/dashboard.py [LOG_DIR [OUT.svg]]     (defaults: .demo, docs/dashboard.svg)

Each point is one invocation's EMF line (CloudWatch would add them up per period, as the panel's
`stat` says). Lambda's `Errors` and SQS's queue depth are AWS's own metrics: nothing prints them
locally, and their panels say so. Every amiguard series of the dashboard must have data in the
demo's logs: one without any means the dashboard names a metric the functions do not emit, and
this script fails. Standard library only."""

import glob
import html
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGION = "us-east-1"  # demo/run.sh's
COLUMN, ROW, GAP = 50, 44, 8  # pixels per dashboard grid column and row
PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#ff7f0e"]


def dashboard_body(template_path):
    """The `DashboardBody: !Sub |` block of the template, substituted as CloudFormation would
    (pseudo parameters by the demo's values; resources by their logical ids), as JSON."""
    with open(template_path) as f:
        lines = f.read().split("\n")
    start = next(i for i, line in enumerate(lines) if re.match(r"^\s+DashboardBody: !Sub \|\s*$", line))
    key_indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= key_indent:
            break
        block.append(line)
    indent = min(len(line) - len(line.lstrip()) for line in block if line.strip())
    text = "\n".join(line[indent:] for line in block)
    text = text.replace("${AWS::Region}", REGION)
    text = re.sub(r"\$\{([A-Za-z0-9]+)(\.[A-Za-z]+)?\}", r"\1", text)
    return json.loads(text.replace("${!", "${"))


def emf_samples(log_dir):
    """Every metric value of every EMF line in the logs: (namespace, name, dimensions, value, ms)."""
    samples = []
    for path in sorted(glob.glob(os.path.join(log_dir, "*.log"))):
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{") or '"_aws"' not in line:
                    continue
                try:
                    emf = json.loads(line)
                except ValueError:
                    continue
                meta = emf.get("_aws", {})
                for directive in meta.get("CloudWatchMetrics", []):
                    for dimension_set in directive.get("Dimensions", []):
                        dimensions = {d: emf.get(d) for d in dimension_set}
                        for metric in directive.get("Metrics", []):
                            value = emf.get(metric["Name"])
                            if isinstance(value, (int, float)):
                                samples.append((directive["Namespace"], metric["Name"], dimensions, value,
                                                meta.get("Timestamp", 0)))
    return samples


def series_of(row, samples, palette):
    """The series a `metrics` row shows: [(label, colour, axis, [(ms, value)])], and whether the row
    is AWS's own metric."""
    if isinstance(row[0], dict) and "expression" in row[0]:
        query = re.match(r"SEARCH\('\{([^}]*)\}([^']*)'", row[0]["expression"])
        schema = [s.strip() for s in query.group(1).split(",")]
        terms = dict(re.findall(r'(\w+)="([^"]*)"', query.group(2)))
        namespace, dimension_names, name = schema[0], schema[1:], terms.pop("MetricName")
        groups = {}
        for ns, metric, dims, value, ms in samples:
            if (ns, metric) == (namespace, name) and sorted(dims) == sorted(dimension_names) and \
                    all(dims.get(k) == v for k, v in terms.items()):
                key = " ".join(str(dims[d]) for d in dimension_names if d not in terms)
                groups.setdefault(key, []).append((ms, value))
        return [(key, next(palette), "left", points) for key, points in sorted(groups.items())], False
    options = row[-1] if isinstance(row[-1], dict) else {}
    names = [item for item in row if isinstance(item, str)]
    namespace, name = names[0], names[1]
    wanted = dict(zip(names[2::2], names[3::2]))
    points = [(ms, value) for ns, metric, dims, value, ms in samples
              if (ns, metric) == (namespace, name) and dims == wanted]
    colour = options.get("color") or next(palette)
    return [(options.get("label", name), colour, options.get("yAxis", "left"), points)], namespace.startswith("AWS/")


def number(value):
    return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def render(body, samples):
    widgets = body["widgets"]
    t0 = min((s[4] for s in samples), default=0)
    t1 = max((s[4] for s in samples), default=1)
    span = max(t1 - t0, 1)
    width = 24 * COLUMN
    height = max(w["y"] + w["height"] for w in widgets) * ROW + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#f2f3f3"/>']
    missing = []
    for widget in widgets:
        x, y = widget["x"] * COLUMN + GAP / 2, widget["y"] * ROW + GAP / 2
        w, h = widget["width"] * COLUMN - GAP, widget["height"] * ROW - GAP
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="#ffffff" stroke="#d5dbdb"/>')
        props = widget["properties"]
        if widget["type"] == "text":
            for n, line in enumerate(props["markdown"].split("\n")):
                heading = line.startswith("#")
                text = html.escape(line.lstrip("# ").replace("*", ""))
                out.append(f'<text x="{x + 12}" y="{y + 24 + n * 20}" font-size="{16 if heading else 12}" '
                           f'font-weight="{"bold" if heading else "normal"}" fill="#16191f">{text}</text>')
            out.append(f'<text x="{x + w - 12}" y="{y + 24}" text-anchor="end" fill="#687078">Local rendering of '
                       f'a make demo run: each point is one invocation\'s EMF line '
                       f'({(t1 - t0) / 1000:.0f} s of the demo)</text>')
            continue
        out.append(f'<text x="{x + 12}" y="{y + 20}" font-weight="bold" fill="#16191f">'
                   f'{html.escape(props["title"])}</text>')
        palette = iter(PALETTE * 4)
        series, aws_only = [], True
        for row in props["metrics"]:
            found, aws = series_of(row, samples, palette)
            aws_only = aws_only and aws
            if not aws and not any(points for *_, points in found):
                missing.append(f'{props["title"]}: {json.dumps(row)}')
            series.extend(found)
        stat = props.get("stat", "Sum")
        plot_x, plot_y, plot_w, plot_h = x + 48, y + 34, w - 96, h - 100
        out.append(f'<line x1="{plot_x}" y1="{plot_y + plot_h}" x2="{plot_x + plot_w}" y2="{plot_y + plot_h}" '
                   f'stroke="#aab7b8"/>')
        if aws_only:
            out.append(f'<text x="{x + w / 2}" y="{plot_y + plot_h / 2}" text-anchor="middle" fill="#687078">'
                       f'AWS publishes this metric itself: no local data</text>')
            out.append(f'<text x="{x + w / 2}" y="{plot_y + plot_h / 2 + 18}" text-anchor="middle" fill="#687078">'
                       f'(make demo stops at the first failed invocation; it has no dead-letter queue)</text>')
        if not aws_only:
            for at, anchor, text in [(plot_x, "start", "0 s"), (plot_x + plot_w, "end", f"{span / 1000:.0f} s")]:
                out.append(f'<text x="{at}" y="{plot_y + plot_h + 13}" text-anchor="{anchor}" font-size="10" '
                           f'fill="#687078">{text}</text>')
        for axis in ["left", "right"]:
            on_axis = [s for s in series if s[2] == axis and not aws_only]
            top = max((v for *_, points in on_axis for _, v in points), default=0) or 1
            if on_axis:
                label_x, anchor = (plot_x - 6, "end") if axis == "left" else (plot_x + plot_w + 6, "start")
                out.append(f'<text x="{label_x}" y="{plot_y + 10}" text-anchor="{anchor}" fill="#687078">'
                           f'{number(top)}</text>')
                out.append(f'<text x="{label_x}" y="{plot_y + plot_h}" text-anchor="{anchor}" fill="#687078">0</text>')
            for _, colour, _, points in on_axis:
                xy = [(plot_x + (ms - t0) / span * plot_w, plot_y + plot_h - v / top * plot_h) for ms, v in points]
                if len(xy) > 1:
                    path = " ".join(f"{px:.1f},{py:.1f}" for px, py in xy)
                    dash = ' stroke-dasharray="6 4"' if axis == "right" else ""
                    out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
                out.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"/>' for px, py in xy)
        legend_y = plot_y + plot_h + 30
        legend_x = x + 12
        for label, colour, axis, points in series:
            if aws_only:
                break
            values = [v for _, v in points]
            summary = (number(sum(values)) if stat == "Sum" else number(max(values))) if values else "no data"
            text = f'{label}{" (right axis)" if axis == "right" else ""}: {stat.lower()} {summary}'
            if legend_x + 7 * len(text) > x + w:
                legend_x, legend_y = x + 12, legend_y + 16
            out.append(f'<rect x="{legend_x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
            out.append(f'<text x="{legend_x + 14}" y="{legend_y}" fill="#16191f">{html.escape(text)}</text>')
            legend_x += 14 + 6.5 * len(text) + 16
    out.append("</svg>")
    return "\n".join(out) + "\n", missing


def main():
    log_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".demo")
    target = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "dashboard.svg")
    body = dashboard_body(os.path.join(ROOT, "template.yaml"))
    samples = emf_samples(log_dir)
    if not samples:
        raise SystemExit(f"error: no EMF line in {log_dir}/*.log: did the functions print their metrics?")
    svg, missing = render(body, samples)
    if missing:
        raise SystemExit("error: the dashboard shows series the demo's functions never emitted:\n  "
                         + "\n  ".join(missing))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as f:
        f.write(svg)
    print(f"dashboard: {len(samples)} metric values from {log_dir}/*.log drawn into "
          f"{os.path.relpath(target, ROOT)} (the template's panels)")


if __name__ == "__main__":
    main()
