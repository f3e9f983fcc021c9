// Charts drawn as inline SVG: bars for counts, lines for latencies and replicas (no library, works offline).

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 170;
const PAD = {left: 44, right: 8, top: 10, bottom: 22};

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * magnitude).find((top) => top >= value);
}

// One chart of `points` (the analytics API's buckets). `series`: [{key, label, color, kind: "bar"|"line"}], each
// `key` a function of a point that gives a number or null (no value: a gap in a line).
// `width`: the drawing's width in its own units, about its width on screen in pixels (so text keeps its size).
export function chart(points, series, {title, unit = "", testid, width = 960} = {}) {
  const root = svg("svg", {viewBox: `0 0 ${width} ${HEIGHT}`, class: "chart", role: "img", "aria-label": title});
  if (testid) root.setAttribute("data-testid", testid);
  const values = points.flatMap((point) => series.map((s) => s.key(point))).filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...values));
  const plotWidth = width - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotWidth / Math.max(points.length, 1);
  const x = (index) => PAD.left + slot * (index + 0.5);
  const y = (value) => PAD.top + plotHeight * (1 - value / top);

  for (const fraction of [0, 0.5, 1]) {
    const at = y(top * fraction);
    root.append(svg("line", {x1: PAD.left, x2: width - PAD.right, y1: at, y2: at, class: "grid"}));
    root.append(svg("text", {x: PAD.left - 4, y: at + 4, class: "axis", "text-anchor": "end"},
      `${+(top * fraction).toPrecision(3)}${unit}`));
  }
  if (points.length) {
    root.append(svg("text", {x: PAD.left, y: HEIGHT - 6, class: "axis"}, clock(points[0].t)));
    root.append(svg("text", {x: width - PAD.right, y: HEIGHT - 6, class: "axis", "text-anchor": "end"},
      clock(points[points.length - 1].t)));
  }
  for (const s of series) {
    if (s.kind === "bar") {
      points.forEach((point, index) => {
        const value = s.key(point) || 0;
        if (!value) return;
        const bar = svg("rect", {x: x(index) - slot * 0.4, width: slot * 0.8, y: y(value), height: y(0) - y(value),
          fill: s.color, "data-value": value});
        bar.append(svg("title", {}, `${clock(point.t)}: ${value}`));
        root.append(bar);
      });
      continue;
    }
    // A line per run of points with values: no value is a gap, not a zero.
    let run = [];
    const flush = () => {
      if (run.length === 1) root.append(svg("circle", {cx: run[0][0], cy: run[0][1], r: 2, fill: s.color}));
      if (run.length > 1) {
        root.append(svg("polyline", {points: run.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.color,
          "stroke-width": 1.5}));
      }
      run = [];
    };
    points.forEach((point, index) => {
      const value = s.key(point);
      if (value === null || value === undefined) flush();
      else run.push([x(index).toFixed(1), y(value).toFixed(1)]);
    });
    flush();
  }
  return root;
}

export function legend(series) {
  const list = document.createElement("div");
  list.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${s.color}"></i>`;
    item.append(s.label);
    list.append(item);
  }
  return list;
}
