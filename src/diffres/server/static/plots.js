"use strict";
// Canvas plots for the demo page, no library: heat maps (log-mel, merged frames), the importance
// curve, the window timeline and time axes. Colour is never the only carrier: the map is viridis
// (brightness rises with the value, so it reads in grey too), curves and axes are labelled, windows
// carry text. Event markers and the playhead are HTML laid over the plots (app.js), not drawn here.

const Plots = (() => {
  const STOPS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  const LUT = Array.from({length: 256}, (_, i) => {
    const x = (i / 255) * (STOPS.length - 1), k = Math.min(STOPS.length - 2, Math.floor(x)), f = x - k;
    return STOPS[k].map((a, c) => Math.round(a + (STOPS[k + 1][c] - a) * f));
  });
  const INK = "#1b1b1f", FAINT = "#9a9aa6", FONT = 11;
  // Label colours (Okabe-Ito, distinguishable with common colour blindness); text always names the label.
  const PALETTE = ["#d55e00", "#0072b2", "#cc79a7", "#009e73", "#e69f00", "#56b4e9", "#8c6d1f", "#7a4fb3"];

  /** Size the drawing buffer to the CSS box times the pixel ratio, so lines stay sharp on phones. */
  function fit(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.font = `${FONT * ratio}px system-ui, sans-serif`;
    return {ctx, width, height, ratio};
  }

  /** Value range of a [frames][bands] matrix: top value and 60 dB-ish (in log units) below it. */
  function range(rows) {
    let hi = -Infinity;
    for (const row of rows) for (const v of row) if (v > hi) hi = v;
    return {lo: hi - 14, hi};
  }

  /** rows [frames][bands] as an image; ticks are fractional frame positions marked at the top edge. */
  function heatmap(canvas, rows, {lo, hi} = range(rows), ticks = []) {
    const {ctx, width, height, ratio} = fit(canvas);
    const frames = rows.length, bands = rows[0].length;
    const image = ctx.createImageData(width, height);
    const span = Math.max(1e-6, hi - lo);
    for (let x = 0; x < width; x++) {
      const row = rows[Math.min(frames - 1, Math.floor((x * frames) / width))];
      for (let y = 0; y < height; y++) {
        const band = Math.min(bands - 1, Math.floor(((height - 1 - y) * bands) / height));
        const level = Math.max(0, Math.min(255, Math.round(((row[band] - lo) / span) * 255)));
        const [r, g, b] = LUT[level];
        const o = (y * width + x) * 4;
        image.data[o] = r; image.data[o + 1] = g; image.data[o + 2] = b; image.data[o + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
    ctx.fillStyle = "#ffffff";
    for (const t of ticks) ctx.fillRect(Math.round((t / frames) * width), height - 6 * ratio, Math.max(1, ratio), 6 * ratio);
  }

  /** A curve over frames with a labelled y axis and a dashed reference line (importance = 1). */
  function curve(canvas, values, {reference = 1, label = ""} = {}) {
    const {ctx, width, height, ratio} = fit(canvas);
    let peak = reference;
    for (const v of values) if (v > peak) peak = v;
    const top = peak * 1.05, pad = 4 * ratio;
    const y = (v) => height - pad - (v / top) * (height - 2 * pad);
    const x = (i) => ((i + 0.5) / values.length) * width;
    ctx.strokeStyle = FAINT;
    ctx.setLineDash([4 * ratio, 3 * ratio]);
    ctx.beginPath(); ctx.moveTo(0, y(reference)); ctx.lineTo(width, y(reference)); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "rgba(43, 89, 195, 0.18)";
    ctx.beginPath(); ctx.moveTo(0, y(0));
    values.forEach((v, i) => ctx.lineTo(x(i), y(v)));
    ctx.lineTo(width, y(0)); ctx.closePath(); ctx.fill();
    ctx.strokeStyle = "#2b59c3"; ctx.lineWidth = Math.max(1, (values.length > width ? 1 : 1.5) * ratio);
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
    ctx.fillStyle = INK;
    ctx.fillText(`${reference}`, 2 * ratio, y(reference) - 2 * ratio);
    ctx.fillText("0", 2 * ratio, height - 2 * ratio);
    if (label) ctx.fillText(label, width - ctx.measureText(label).width - 4 * ratio, height - 4 * ratio);
  }

  /** Windows of long audio as labelled bars on two alternating rows (they overlap by half). */
  function timeline(canvas, segments, duration, background = "") {
    const {ctx, width, height, ratio} = fit(canvas);
    const rowHeight = height / 2;
    segments.forEach((s, i) => {
      const x0 = (s.start_s / duration) * width, x1 = (s.end_s / duration) * width;
      const y0 = (i % 2) * rowHeight + ratio;
      const top = s.predictions[0];
      const quiet = top.label === background || !top.passed;
      ctx.fillStyle = quiet ? (i % 2 ? "#eceef3" : "#e2e5ec") : (i % 2 ? "#dfe6f7" : "#c4d1f0");
      ctx.fillRect(x0, y0, Math.max(1, x1 - x0 - ratio), rowHeight - 2 * ratio);
      ctx.fillStyle = INK;
      const text = quiet ? "" : top.label;  // only windows whose top label passed its threshold are named
      if (text && ctx.measureText(text).width < x1 - x0 - 4 * ratio) ctx.fillText(text, x0 + 3 * ratio, y0 + rowHeight / 2 + 4 * ratio);
    });
  }

  /** A time axis for `span` seconds across the canvas: ticks at a round step, labels in seconds. */
  function axis(canvas, span) {
    const {ctx, width, height, ratio} = fit(canvas);
    const fits = Math.max(2, width / (64 * ratio));
    const step = [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find((s) => span / s <= fits) || 1200;
    const digits = step < 0.1 ? 2 : step < 1 ? 1 : 0;
    ctx.fillStyle = INK;
    ctx.fillRect(0, 0, width, Math.max(1, ratio));
    ctx.textBaseline = "top";
    for (let k = 0; k * step <= span + 1e-9; k++) {
      const t = k * step, x = Math.min(width - ratio, (t / span) * width);
      ctx.fillRect(x, 0, Math.max(1, ratio), 5 * ratio);
      const text = k === 0 ? "0 s" : t.toFixed(digits);
      const w = ctx.measureText(text).width;
      ctx.fillText(text, Math.max(0, Math.min(width - w, x - w / 2)), 7 * ratio);
    }
    canvas.setAttribute("aria-label", `time axis, 0 to ${span.toFixed(2)} s`);
  }

  function colour(index) {
    return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
  }

  return {heatmap, curve, timeline, axis, range, colour};
})();
