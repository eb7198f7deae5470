// Time-series charts (uPlot) for the overview: colours come from the page's CSS variables, so
// they follow the light/dark scheme; the chart resizes with its box.
import { html } from "./html.js";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";

/**
 * `series`: [{label, color (CSS variable name), values, points (draw each value as a dot)}] sharing
 * the x axis `xs` (epoch seconds).
 * `unit` labels the y axis values.
 */
export function Chart({ xs, series, unit = "", height = 180, testid }) {
  const box = useRef(null);
  const plot = useRef(null);
  const key = series.map((s) => s.label).join("|");

  useEffect(() => {
    const el = box.current;
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line"), width: 1 }, ticks: { stroke: cssVar("--line") } };
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [axis, { ...axis, size: 50, values: (u, vals) => vals.map((v) => `${+v.toFixed(2)}${unit}`) }],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: cssVar(s.color),
          width: 2,
          // A series with gaps (lag: null without starts) shows its lone values as dots.
          points: { show: !!s.points, size: 5 },
          value: (u, v) => (v === null || v === undefined ? "—" : `${+v.toFixed(2)}${unit}`),
        })),
      ],
    };
    plot.current = new uPlot(opts, [xs, ...series.map((s) => s.values)], el);
    const ro = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(200, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [key, height]);

  useEffect(() => {
    plot.current?.setData([xs, ...series.map((s) => s.values)]);
  }, [xs, series]);

  return html`<div class="chart" ref=${box} data-testid=${testid}></div>`;
}
