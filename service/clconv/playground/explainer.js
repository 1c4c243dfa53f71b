// The explainer: a small grid diagram of the current settings, in which hovering an output
// pixel highlights the input pixels and kernel taps that produce it, and a chart of receptive
// field growth over stacked layers. It computes the geometry in the browser and sends no request.

import { t } from "./i18n.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_GRID_PX = 340;
const RF_LAYERS = 6;

function svgElement(tag, attributes, parent) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, String(value));
  }
  if (parent) {
    parent.appendChild(element);
  }
  return element;
}

function htmlElement(tag, className, text, parent) {
  const element = document.createElement(tag);
  if (className) {
    element.className = className;
  }
  if (text !== undefined) {
    element.textContent = text;
  }
  if (parent) {
    parent.appendChild(element);
  }
  return element;
}

function formatValue(value) {
  if (Number.isInteger(value)) {
    return String(value);
  }
  const rounded = Math.abs(value) < 1 ? value.toFixed(2).replace(/^(-?)0\./, "$1.") : value.toFixed(1);
  return rounded;
}

/**
 * Resolve the padding settings to [top, bottom, left, right] as the server does. "same" and
 * "valid" follow PyTorch; where the server would reject them, the diagram uses 0 and a note.
 */
export function resolvePads(settings) {
  const { padding, kh, kw, stride, dilation, transposed } = settings;
  const zero = [0, 0, 0, 0];
  if (padding.form === "same" || padding.form === "valid") {
    if (transposed) {
      return { pads: zero, note: t("transposed_no_strings") };
    }
    if (padding.form === "valid") {
      return { pads: zero, note: null };
    }
    if (stride[0] !== 1 || stride[1] !== 1) {
      return { pads: zero, note: t("same_needs_stride") };
    }
    const totalH = dilation[0] * (kh - 1);
    const totalW = dilation[1] * (kw - 1);
    const top = Math.floor(totalH / 2);
    const left = Math.floor(totalW / 2);
    return { pads: [top, totalH - top, left, totalW - left], note: null };
  }
  const clean = (value) => (Number.isInteger(value) && value > 0 ? value : 0);
  if (padding.form === "pair") {
    const [ph, pw] = padding.value.map(clean);
    return { pads: [ph, ph, pw, pw], note: null };
  }
  if (padding.form === "asymmetric") {
    return { pads: padding.value.map(clean), note: null };
  }
  const p = clean(padding.value);
  return { pads: [p, p, p, p], note: null };
}

/** Geometry of a convolution over an n×n input: padded grid, output size and taps. */
function convGeometry(settings, pads) {
  const { n, kh, kw, stride, dilation } = settings;
  const [top, bottom, left, right] = pads;
  const rows = n + top + bottom;
  const cols = n + left + right;
  const outRows = Math.floor((rows - dilation[0] * (kh - 1) - 1) / stride[0]) + 1;
  const outCols = Math.floor((cols - dilation[1] * (kw - 1) - 1) / stride[1]) + 1;
  return {
    rows,
    cols,
    outRows,
    outCols,
    cellType(r, c) {
      const inside = r >= top && r < top + n && c >= left && c < left + n;
      return inside ? "input" : "pad";
    },
    inputPixel(r, c) {
      return [r - top, c - left];
    },
    tapPosition(oy, ox, i, j) {
      return [oy * stride[0] + i * dilation[0], ox * stride[1] + j * dilation[1]];
    },
    kernelValue(i, j) {
      return settings.kernel[i][j];
    },
  };
}

/**
 * Geometry of a transposed convolution as its equivalent stride-1 convolution. The input gets
 * s − 1 zeros between pixels and d·(k − 1) − p zero rows and columns on each side, plus
 * output_padding at the bottom and right, where a negative amount crops. The kernel is rotated
 * by 180°.
 */
function transposedGeometry(settings, pads) {
  const { n, kh, kw, stride, dilation, outputPadding } = settings;
  const zeroInserted = [(n - 1) * stride[0] + 1, (n - 1) * stride[1] + 1];
  const top = dilation[0] * (kh - 1) - pads[0];
  const bottom = dilation[0] * (kh - 1) - pads[1] + outputPadding[0];
  const left = dilation[1] * (kw - 1) - pads[2];
  const right = dilation[1] * (kw - 1) - pads[3] + outputPadding[1];
  const rows = zeroInserted[0] + top + bottom;
  const cols = zeroInserted[1] + left + right;
  return {
    rows,
    cols,
    outRows: rows - dilation[0] * (kh - 1),
    outCols: cols - dilation[1] * (kw - 1),
    cropped: [Math.max(0, -top) + Math.max(0, -bottom), Math.max(0, -left) + Math.max(0, -right)],
    cellType(r, c) {
      const q = r - top;
      const p = c - left;
      if (q < 0 || q >= zeroInserted[0] || p < 0 || p >= zeroInserted[1]) {
        return "pad";
      }
      return q % stride[0] === 0 && p % stride[1] === 0 ? "input" : "inserted";
    },
    inputPixel(r, c) {
      return [(r - top) / stride[0], (c - left) / stride[1]];
    },
    tapPosition(oy, ox, i, j) {
      return [oy + i * dilation[0], ox + j * dilation[1]];
    },
    kernelValue(i, j) {
      return settings.kernel[kh - 1 - i][kw - 1 - j];
    },
  };
}

function drawGrid(parent, title, rows, cols, cell, classOf, labelOf) {
  const panel = htmlElement("figure", "grid-panel", undefined, parent);
  const svg = svgElement("svg", {
    width: cols * cell + 2,
    height: rows * cell + 2,
    viewBox: `-1 -1 ${cols * cell + 2} ${rows * cell + 2}`,
    role: "img",
    "aria-label": title,
  }, panel);
  const cells = [];
  for (let r = 0; r < rows; r += 1) {
    const row = [];
    for (let c = 0; c < cols; c += 1) {
      const group = svgElement("g", { class: `cell ${classOf(r, c)}`, "data-y": r, "data-x": c }, svg);
      svgElement("rect", { x: c * cell, y: r * cell, width: cell, height: cell }, group);
      const label = labelOf ? labelOf(r, c) : "";
      if (label !== "" && cell >= 16) {
        const text = svgElement("text", {
          x: c * cell + cell / 2,
          y: r * cell + cell / 2,
          "font-size": Math.max(7, Math.min(11, cell * 0.42)),
        }, group);
        text.textContent = label;
      }
      row.push(group);
    }
    cells.push(row);
  }
  htmlElement("figcaption", null, title, panel);
  return { panel, svg, cells };
}

function drawLegend(parent, entries) {
  const legend = htmlElement("ul", "legend", undefined, parent);
  for (const [className, text] of entries) {
    const item = htmlElement("li", null, undefined, legend);
    htmlElement("span", `swatch ${className}`, undefined, item);
    htmlElement("span", null, text, item);
  }
}

/** Receptive field (one axis) after each of `layers` stacked layers. */
export function receptiveFieldGrowth(k, layers) {
  const linear = [];
  const doubling = [];
  for (let layer = 1; layer <= layers; layer += 1) {
    linear.push(1 + layer * (k - 1));
    doubling.push(1 + (k - 1) * (2 ** layer - 1));
  }
  return { linear, doubling };
}

function repeatedReceptiveField(k, stride, dilation, layers) {
  const values = [];
  let field = 1;
  let jump = 1;
  for (let layer = 1; layer <= layers; layer += 1) {
    field += dilation * (k - 1) * jump;
    jump *= stride;
    values.push(field);
  }
  return values;
}

function drawReceptiveFieldChart(parent, settings) {
  const k = Math.max(2, settings.kh);
  const growth = receptiveFieldGrowth(k, RF_LAYERS);
  const series = [
    ["rf-linear", t("rf_linear", { k }), growth.linear],
    ["rf-doubling", t("rf_doubling"), growth.doubling],
  ];
  if (!settings.transposed) {
    const values = repeatedReceptiveField(k, settings.stride[0], settings.dilation[0], RF_LAYERS);
    series.push(["rf-current", t("rf_current", { s: settings.stride[0], d: settings.dilation[0] }), values]);
  }
  const section = htmlElement("figure", "rf-chart", undefined, parent);
  htmlElement("figcaption", null, t("rf_title", { k }), section);
  const width = 560;
  const height = 220;
  const bottom = height - 24;
  const maxValue = Math.max(...series.flatMap(([, , values]) => values));
  const groupWidth = (width - 20) / RF_LAYERS;
  const barWidth = (groupWidth - 12) / series.length;
  const svg = svgElement("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }, section);
  svg.setAttribute("aria-label", t("rf_title", { k }));
  for (let layer = 0; layer < RF_LAYERS; layer += 1) {
    const x0 = 10 + layer * groupWidth + 6;
    series.forEach(([className, , values], s) => {
      const value = values[layer];
      const barHeight = Math.max(1, ((bottom - 24) * value) / maxValue);
      const x = x0 + s * barWidth;
      svgElement("rect", { class: className, x, y: bottom - barHeight, width: barWidth - 2, height: barHeight }, svg);
      const label = svgElement("text", { class: "bar-label", x: x + (barWidth - 2) / 2, y: bottom - barHeight - 3 }, svg);
      label.textContent = value;
    });
    const axis = svgElement("text", { class: "axis-label", x: x0 + (groupWidth - 12) / 2, y: height - 6 }, svg);
    axis.textContent = `${t("rf_layers")} ${layer + 1}`;
  }
  svgElement("line", { class: "axis", x1: 10, x2: width - 10, y1: bottom, y2: bottom }, svg);
  drawLegend(section, series.map(([className, text]) => [className, text]));
}

function sizeFormula(settings, pads, geometry) {
  const values = {
    h: settings.n,
    pt: pads[0],
    pb: pads[1],
    dh: settings.dilation[0],
    kh1: settings.kh - 1,
    sh: settings.stride[0],
    oph: settings.outputPadding[0],
    oh: geometry.outRows,
  };
  return t(settings.transposed ? "size_formula_transposed" : "size_formula", values);
}

/**
 * Draw the explainer for `settings` into `container`: {kind, n, kh, kw, kernel, stride,
 * dilation, padding, outputPadding}. Returns the hover function, for tests and keyboard use.
 */
export function renderExplainer(container, settings) {
  container.replaceChildren();
  const transposed = settings.kind === "transpose";
  const full = { ...settings, transposed };
  const { pads, note } = resolvePads(full);
  const geometry = transposed ? transposedGeometry(full, pads) : convGeometry(full, pads);
  const { kh, kw, dilation } = settings;

  const notes = htmlElement("div", "explainer-notes", undefined, container);
  if (transposed) {
    htmlElement("p", null, t("transposed_note"), notes);
  } else if (settings.kind === "dwsep") {
    htmlElement("p", null, t("separable_note_dw"), notes);
  } else if (settings.kind === "spatial") {
    htmlElement("p", null, t("separable_note_spatial"), notes);
  }
  if (note) {
    htmlElement("p", "warning", note, notes);
  }
  if (transposed && (geometry.cropped[0] > 0 || geometry.cropped[1] > 0)) {
    htmlElement("p", null, t("legend_cropped", { rows: geometry.cropped[0], cols: geometry.cropped[1] }), notes);
  }
  htmlElement("p", "formula", sizeFormula(full, pads, geometry), notes);

  if (geometry.outRows <= 0 || geometry.outCols <= 0 || geometry.rows <= 0 || geometry.cols <= 0) {
    htmlElement("p", "warning", t("empty_output", { rows: geometry.outRows, cols: geometry.outCols }), notes);
    drawReceptiveFieldChart(container, full);
    return () => {};
  }

  const footprint = [dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1];
  const largest = Math.max(geometry.rows, geometry.cols, footprint[0], footprint[1]);
  const cell = Math.max(10, Math.min(26, Math.floor(MAX_GRID_PX / largest)));
  const grids = htmlElement("div", "grids", undefined, container);

  let original = null;
  if (transposed) {
    original = drawGrid(grids, t("original_input", { rows: settings.n, cols: settings.n }), settings.n,
      settings.n, cell, () => "input");
  }
  const inputTitle = transposed
    ? t("zero_inserted", { rows: geometry.rows, cols: geometry.cols })
    : t("padded_input", { rows: geometry.rows, cols: geometry.cols });
  const inputGrid = drawGrid(grids, inputTitle, geometry.rows, geometry.cols, cell,
    (r, c) => geometry.cellType(r, c), (r, c) => (geometry.cellType(r, c) === "input" ? "" : "0"));
  inputGrid.panel.id = "explain-input";

  const isTap = (y, x) => y % dilation[0] === 0 && x % dilation[1] === 0;
  let kernelTitle = dilation[0] > 1 || dilation[1] > 1
    ? t("kernel_dilated", { kh, kw, rows: footprint[0], cols: footprint[1] })
    : t("kernel_grid", { rows: kh, cols: kw });
  if (transposed) {
    kernelTitle = `${t("kernel_flipped")}. ${kernelTitle}`;
  }
  const kernelGrid = drawGrid(grids, kernelTitle, footprint[0], footprint[1], cell,
    (y, x) => (isTap(y, x) ? "kernel-tap" : "kernel-hole"),
    (y, x) => (isTap(y, x) ? formatValue(geometry.kernelValue(y / dilation[0], x / dilation[1])) : ""));
  kernelGrid.panel.id = "explain-kernel";

  const outputGrid = drawGrid(grids, t("output_grid", { rows: geometry.outRows, cols: geometry.outCols }),
    geometry.outRows, geometry.outCols, cell, () => "out-cell");
  outputGrid.panel.id = "explain-output";

  const legendEntries = [["input", t("legend_input")], ["pad", t("legend_padding")]];
  if (transposed) {
    legendEntries.push(["inserted", t("legend_inserted")]);
  }
  legendEntries.push(["tap", t("legend_tap")]);
  drawLegend(container, legendEntries);
  const pixelText = htmlElement("p", "formula pixel-formula", "", container);
  pixelText.id = "explain-pixel";

  let highlighted = [];
  function highlight(oy, ox) {
    for (const element of highlighted) {
      element.classList.remove("tap", "active");
    }
    highlighted = [];
    const mark = (element, className) => {
      element.classList.add(className);
      highlighted.push(element);
    };
    mark(outputGrid.cells[oy][ox], "active");
    let onPadding = 0;
    let onInput = 0;
    for (let i = 0; i < kh; i += 1) {
      for (let j = 0; j < kw; j += 1) {
        const [r, c] = geometry.tapPosition(oy, ox, i, j);
        const type = geometry.cellType(r, c);
        mark(inputGrid.cells[r][c], "tap");
        if (type === "input") {
          onInput += 1;
          if (original) {
            const [y, x] = geometry.inputPixel(r, c);
            mark(original.cells[y][x], "tap");
          }
        } else if (type === "pad") {
          onPadding += 1;
        }
        // A transposed convolution's taps on inserted zeros or padding add nothing.
        if (!transposed || type === "input") {
          mark(kernelGrid.cells[i * dilation[0]][j * dilation[1]], "active");
        }
      }
    }
    const values = {
      oy,
      ox,
      sh: settings.stride[0],
      sw: settings.stride[1],
      pt: pads[0],
      pl: pads[2],
      dh: dilation[0],
      dw: dilation[1],
      taps: kh * kw,
      pad: onPadding,
      real: onInput,
    };
    pixelText.textContent = t(transposed ? "pixel_formula_transposed" : "pixel_formula", values);
  }

  outputGrid.cells.forEach((row, oy) => {
    row.forEach((element, ox) => {
      element.setAttribute("tabindex", "0");
      element.addEventListener("mouseenter", () => highlight(oy, ox));
      element.addEventListener("focus", () => highlight(oy, ox));
    });
  });
  highlight(Math.floor(geometry.outRows / 2), Math.floor(geometry.outCols / 2));
  drawReceptiveFieldChart(container, full);
  return highlight;
}
