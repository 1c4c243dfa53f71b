// The playground page: builds requests from the form, calls the public /v1 API of the server
// that served the page, and shows the images, figures and errors that come back.

import { renderExplainer } from "./explainer.js";
import { initialLanguage, setLanguage, t } from "./i18n.js";
import { OPERATIONS, buildWeight, makeKernel, mixingWeight, rotateKernel } from "./presets.js";
import {
  decodeTensor,
  drawImageData,
  encodeTensor,
  imagesToTensor,
  loadImageData,
  shapeOnly,
  tensorToImageData,
} from "./tensors.js";

const $ = (id) => document.getElementById(id);

const SIZED_PRESETS = new Set(["identity", "box", "gaussian", "random"]);
const MAX_CHANNEL_VIEWS = 16;
const AUTO_RUN_DELAY_MS = 350;
const TIMING_NAMES = ["queue", "upload", "compute", "download", "total"];

// Optional fields (data-show names) and the kinds of operation that show them.
const VISIBLE = {
  groups: ["conv", "pointwise", "transpose", "spatial"],
  "out-channels": ["conv", "pointwise", "transpose", "spatial", "dwsep"],
  multiplier: ["depthwise", "dwsep"],
  mixing: ["conv", "pointwise", "transpose", "spatial", "dwsep"],
  "pointwise-hint": ["dwsep"],
  "output-padding": ["transpose"],
  "padding-mode": ["conv", "pointwise", "depthwise", "spatial", "dwsep", "pipeline"],
};

const state = {
  kernel: makeKernel("emboss", 3, 3),
  images: new Map(),
  upload: null,
  input: null,
  randomMixing: new Map(),
  sequence: 0,
  completed: 0,
  result: null,
  plan: null,
  timer: null,
  status: { key: "status_idle", params: {} },
};

// ---------------------------------------------------------------------------------------------
// Reading the form

function operation() {
  return OPERATIONS[$("op").value];
}

/** Read the number in an input, or undefined when it is empty (the API default then applies). */
function readNumber(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

/** Read a pair as an int when both parts are equal, else [h, w], or undefined if one is empty. */
function readPair(idH, idW) {
  const h = readNumber(idH);
  const w = readNumber(idW);
  if (h === undefined || w === undefined) {
    return undefined;
  }
  return h === w ? h : [h, w];
}

function paddingSetting() {
  const form = $("padding-form").value;
  if (form === "same" || form === "valid") {
    return { form, body: form };
  }
  if (form === "pair") {
    const value = [readNumber("padding-h"), readNumber("padding-w")];
    return { form, value, body: value };
  }
  if (form === "asymmetric") {
    const value = ["top", "bottom", "left", "right"].map((side) => readNumber(`padding-${side}`));
    const body = { top: value[0], bottom: value[1], left: value[2], right: value[3] };
    return { form, value, body };
  }
  const value = readNumber("padding-int");
  return { form: "int", value, body: value };
}

function channelCount(layout) {
  return { rgb: 3, gray: 1, pair: 6 }[layout];
}

/** Return `value` if it is a positive integer (usable as an array size), else `fallback`. */
function positive(value, fallback) {
  return Number.isInteger(value) && value >= 1 ? value : fallback;
}

function randomMixing(ol, j) {
  const key = `${ol},${j}`;
  if (!state.randomMixing.has(key)) {
    state.randomMixing.set(key, Math.round((Math.random() * 2 - 1) * 100) / 100);
  }
  return state.randomMixing.get(key);
}

// ---------------------------------------------------------------------------------------------
// Building the request

function biasTensor(channels) {
  const value = readNumber("bias");
  if (value === undefined) {
    return undefined;
  }
  return encodeTensor([channels], new Float32Array(channels).fill(value));
}

function rotatedCopies(count) {
  return Array.from({ length: count }, (_, r) => rotateKernel(state.kernel, r));
}

function convWeights(kind, c) {
  const kernel = state.kernel;
  const kh = kernel.length;
  const kw = kernel[0].length;
  const mixing = $("mixing").value;
  const groups = readNumber("groups");
  const g = positive(groups, 1);
  const k = positive(readNumber("out-channels"), c);
  const cg = Math.max(1, Math.floor(c / g));
  const kg = Math.max(1, Math.floor(k / g));
  if (kind === "transpose") {
    // conv_transpose2d weights are [in, out/groups, kh, kw].
    const weight = buildWeight(c, kg, kh, kw, (i, ol, y, x) => kernel[y][x] * mixingWeight(mixing, ol, i % cg, cg, randomMixing));
    return { weight, groups, k };
  }
  const weight = buildWeight(k, cg, kh, kw, (o, j, y, x) => kernel[y][x] * mixingWeight(mixing, o % kg, j, cg, randomMixing));
  return { weight, groups, k };
}

function depthwiseWeight(c, m) {
  const copies = rotatedCopies(m);
  const kh = state.kernel.length;
  const kw = state.kernel[0].length;
  return buildWeight(c * m, 1, kh, kw, (o, _, y, x) => copies[o % m][y][x]);
}

/** Build the operation's own fields (weights, groups, bias) from the current form. */
function operationFields(kind, c) {
  const fields = {};
  if (kind === "depthwise") {
    const m = positive(readNumber("multiplier"), 1);
    const weight = depthwiseWeight(c, m);
    fields.weight = encodeTensor(weight.shape, weight.data);
    fields.groups = c;
    fields.bias = biasTensor(c * m);
    return { fields, k: c * m, m };
  }
  if (kind === "dwsep") {
    const m = positive(readNumber("multiplier"), 1);
    const k = positive(readNumber("out-channels"), c);
    const mixing = $("mixing").value;
    const depthwise = depthwiseWeight(c, m);
    // Copy r of channel i is depthwise channel i·m + r. The 1×1 step mixes the C channels as
    // the mixing mode selects and averages the m copies of each.
    const pointwise = buildWeight(k, c * m, 1, 1, (o, i) => mixingWeight(mixing, o, Math.floor(i / m), c, randomMixing) / m);
    fields.depthwise_weight = encodeTensor(depthwise.shape, depthwise.data);
    fields.pointwise_weight = encodeTensor(pointwise.shape, pointwise.data);
    fields.pointwise_bias = biasTensor(k);
    return { fields, k, m };
  }
  if (kind === "pipeline") {
    const first = depthwiseWeight(c, 1);
    const bilinear = makeKernel("bilinear");
    const upsample = buildWeight(c, 1, 4, 4, (i, o, y, x) => bilinear[y][x]);
    return {
      steps: [
        { op: "conv2d", weight: encodeTensor(first.shape, first.data), groups: c, bias: biasTensor(c) },
        { op: "conv_transpose2d", weight: encodeTensor(upsample.shape, upsample.data), groups: c, stride: 2, padding: 1 },
      ],
      k: c,
      m: 1,
    };
  }
  const { weight, groups, k } = convWeights(kind, c);
  fields.weight = encodeTensor(weight.shape, weight.data);
  fields.groups = groups;
  fields.bias = biasTensor(k);
  return { fields, k, m: 1 };
}

/** Build {endpoint, body} from the form; undefined values are left out of the JSON. */
function buildRequest() {
  const preset = operation();
  const kind = preset.kind;
  const c = state.input.shape[1];
  const settings = {
    stride: readPair("stride-h", "stride-w"),
    padding: paddingSetting().body,
    dilation: readPair("dilation-h", "dilation-w"),
    activation: $("activation").value || undefined,
  };
  if (kind !== "transpose" && $("padding-mode").value !== "zeros") {
    settings.padding_mode = $("padding-mode").value;
  }
  if (kind === "transpose") {
    settings.output_padding = readPair("output-padding-h", "output-padding-w");
  }
  const input = encodeTensor(state.input.shape, state.input.data);
  const built = operationFields(kind, c);
  let body;
  if (kind === "pipeline") {
    built.steps[0] = { ...built.steps[0], ...settings };
    body = { input, steps: built.steps };
  } else {
    body = { input, ...built.fields, ...settings };
  }
  body.device = $("device").value || undefined;
  return { endpoint: preset.endpoint, body, k: built.k, m: built.m, kind };
}

// ---------------------------------------------------------------------------------------------
// Errors shown by their field

function clearErrors() {
  for (const element of document.querySelectorAll(".field-error")) {
    element.hidden = true;
    element.textContent = "";
  }
  for (const element of document.querySelectorAll(".has-error")) {
    element.classList.remove("has-error");
  }
  for (const element of document.querySelectorAll("[aria-invalid]")) {
    element.removeAttribute("aria-invalid");
  }
}

/** List the field names to try for a dotted path, most specific first: a.b[1].c, a.b[1], a.b, a. */
function fieldCandidates(path) {
  const candidates = [];
  let current = path;
  while (current) {
    candidates.push(current);
    const cut = current.endsWith("]") ? current.lastIndexOf("[") : current.lastIndexOf(".");
    current = cut > 0 ? current.slice(0, cut) : "";
  }
  return candidates;
}

function visibleFieldFor(path) {
  for (const candidate of fieldCandidates(path || "")) {
    for (const element of document.querySelectorAll("[data-fields]")) {
      const names = element.dataset.fields.split(/\s+/);
      if (names.includes(candidate) && element.offsetParent !== null) {
        return element;
      }
    }
  }
  return null;
}

function showError(error) {
  const field = visibleFieldFor(error.field);
  const detail = error.code ? ` (${error.code}${error.field ? `, field ${error.field}` : ""})` : "";
  const target = field ? field.querySelector(":scope > .field-error") : $("general-error");
  target.textContent = `${error.message}${detail}`;
  target.hidden = false;
  target.dataset.field = error.field || "";
  if (field) {
    field.classList.add("has-error");
    for (const control of field.querySelectorAll("input, select")) {
      control.setAttribute("aria-invalid", "true");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Calling the API

class ApiError extends Error {
  constructor(body) {
    super(body.message);
    this.body = body;
  }
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ApiError({ code: `http_${response.status}`, message: text.slice(0, 300), field: null });
  }
  if (!response.ok) {
    throw new ApiError(parsed.error || { code: `http_${response.status}`, message: text.slice(0, 300), field: null });
  }
  return parsed;
}

function setStatus(stateName, key, params = {}) {
  const status = $("status");
  status.dataset.state = stateName;
  state.status = { key, params };
  status.textContent = t(key, params);
}

async function run() {
  window.clearTimeout(state.timer);
  if (!state.input) {
    return;
  }
  state.sequence += 1;
  const sequence = state.sequence;
  clearErrors();
  setStatus("running", "status_running");
  const request = buildRequest();
  const planBody = { op: request.endpoint, ...shapeOnly(request.body) };
  $("request-body").textContent = `POST /v1/${request.endpoint}\n${JSON.stringify(shapeOnly(request.body), null, 2)}`;
  const started = performance.now();
  try {
    const plan = await postJson("/v1/plan", planBody);
    if (sequence !== state.sequence) return;
    const result = await postJson(`/v1/${request.endpoint}`, request.body);
    if (sequence !== state.sequence) return;
    state.plan = plan;
    state.result = { ...result, output: decodeTensor(result.output), request };
    renderResult();
    setStatus("done", "status_done", { ms: (performance.now() - started).toFixed(0) });
  } catch (error) {
    if (sequence !== state.sequence) return;
    if (error instanceof ApiError) {
      showError(error.body);
    } else {
      showError({ code: "network_error", message: t("error_network", { message: error.message }), field: null });
    }
    setStatus("error", "status_error");
  }
  state.completed += 1;
  $("status").dataset.completed = String(state.completed);
}

function scheduleRun() {
  window.clearTimeout(state.timer);
  if ($("auto-run").checked) {
    state.timer = window.setTimeout(run, AUTO_RUN_DELAY_MS);
  }
}

// ---------------------------------------------------------------------------------------------
// Showing results

function formatNumber(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : "–";
}

function formatRange(range) {
  const format = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(3));
  return t("range", { min: format(range.min), max: format(range.max) });
}

/** Pick the channels shown as the main output image: three as RGB, or one as gray. */
function compositeChannels(kind, k, m, inputChannels) {
  if (kind === "depthwise" && inputChannels === 3) {
    return [0, m, 2 * m];
  }
  return k >= 3 ? [0, 1, 2] : [0];
}

function renderInput() {
  const channels = state.input.shape[1] === 1 ? [0] : [0, 1, 2];
  const { image, range } = tensorToImageData(state.input, channels, "clip");
  drawImageData($("input-canvas"), image);
  $("input-shape").textContent = `[${state.input.shape.join(", ")}]`;
  $("input-range").textContent = formatRange(range);
}

function renderChannels(output, mode) {
  const container = $("channels");
  container.replaceChildren();
  const k = output.shape[1];
  $("channels-section").hidden = k < 2;
  for (let c = 0; c < Math.min(k, MAX_CHANNEL_VIEWS); c += 1) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.dataset.channel = String(c);
    const { image, range } = tensorToImageData(output, [c], mode);
    drawImageData(canvas, image);
    const caption = document.createElement("figcaption");
    caption.textContent = `${t("channel", { index: c })} ${formatRange(range)}`;
    figure.append(canvas, caption);
    container.appendChild(figure);
  }
}

function renderTimings(timings) {
  const body = $("timings").tBodies[0];
  body.replaceChildren();
  const total = timings.total || 1;
  for (const name of TIMING_NAMES) {
    if (!(name in timings)) continue;
    const row = body.insertRow();
    row.dataset.timing = name;
    row.insertCell().textContent = t(`timing_${name}`);
    row.insertCell().textContent = timings[name].toFixed(3);
    const bar = document.createElement("span");
    bar.className = `bar bar-${name}`;
    bar.style.width = `${Math.max(1, Math.round((100 * timings[name]) / total))}%`;
    row.insertCell().appendChild(bar);
  }
}

/** Forget the shown result, so that figures of another operation are never shown as current. */
function clearResult() {
  state.result = null;
  state.plan = null;
  drawImageData($("output-canvas"), new ImageData(1, 1));
  $("output-shape").textContent = "";
  $("output-range").textContent = "";
  $("stats").hidden = true;
  $("channels-section").hidden = true;
  $("no-result").hidden = false;
}

function renderResult() {
  const result = state.result;
  if (!result) {
    return;
  }
  const { output, request } = result;
  const mode = $("display-mode").value;
  const channels = compositeChannels(request.kind, output.shape[1], request.m, state.input.shape[1]);
  const { image, range } = tensorToImageData(output, channels, mode);
  drawImageData($("output-canvas"), image);
  $("output-shape").textContent = `[${output.shape.join(", ")}]`;
  $("output-range").textContent = formatRange(range);
  renderChannels(output, mode);

  const plan = state.plan || {};
  $("stat-shape").textContent = `[${output.shape.join(", ")}]`;
  $("stat-flops").textContent = formatNumber(result.flops);
  $("stat-macs").textContent = formatNumber(result.macs);
  $("stat-params").textContent = formatNumber(result.params);
  $("stat-receptive-field").textContent = plan.receptive_field ? plan.receptive_field.join(" × ") : "–";
  $("stat-effective-stride").textContent = plan.effective_stride ? plan.effective_stride.join(" × ") : "–";
  $("stat-algorithm").textContent = result.algorithm.join(" → ");
  $("stat-device").textContent = `${result.device.id} (${result.device.name}, ${result.device.platform})`;
  renderTimings(result.timings_ms);
  $("stats").hidden = false;
  $("no-result").hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Kernel editor, visibility and the explainer

function renderKernelGrid() {
  const grid = $("kernel-grid");
  grid.replaceChildren();
  const kw = state.kernel[0].length;
  grid.style.gridTemplateColumns = `repeat(${kw}, minmax(0, 5em))`;
  state.kernel.forEach((row, y) => {
    row.forEach((value, x) => {
      const input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      input.value = String(Math.round(value * 10000) / 10000);
      input.dataset.y = String(y);
      input.dataset.x = String(x);
      input.setAttribute("aria-label", `w[${y}, ${x}]`);
      grid.appendChild(input);
    });
  });
  $("kh").value = String(state.kernel.length);
  $("kw").value = String(kw);
}

function setKernelFromPreset() {
  const preset = $("kernel-preset").value;
  const kh = positive(readNumber("kh"), 3);
  const kw = positive(readNumber("kw"), 3);
  if (preset !== "custom") {
    state.kernel = makeKernel(preset, Math.min(kh, 9), Math.min(kw, 9));
  }
  renderKernelGrid();
}

function resizeKernel() {
  const kh = Math.min(9, positive(readNumber("kh"), 1));
  const kw = Math.min(9, positive(readNumber("kw"), 1));
  if (SIZED_PRESETS.has($("kernel-preset").value)) {
    state.kernel = makeKernel($("kernel-preset").value, kh, kw);
  } else {
    state.kernel = Array.from({ length: kh }, (_, y) => Array.from({ length: kw }, (_, x) => state.kernel[y]?.[x] ?? 0));
    $("kernel-preset").value = "custom";
  }
  renderKernelGrid();
}

function updateVisibility() {
  const kind = operation().kind;
  for (const element of document.querySelectorAll("[data-show]")) {
    const name = element.dataset.show;
    element.hidden = name === "pair" ? $("layout").value !== "pair" : !(VISIBLE[name] || []).includes(kind);
  }
  const form = $("padding-form").value;
  for (const element of document.querySelectorAll("[data-padding]")) {
    element.hidden = element.dataset.padding !== form;
  }
  const pointwise = kind === "pointwise";
  $("kh").disabled = pointwise;
  $("kw").disabled = pointwise;
}

function explainerSettings() {
  const kind = operation().kind;
  const padding = paddingSetting();
  const pair = (idH, idW, minimum, fallback) =>
    [idH, idW].map((id) => {
      const value = readNumber(id);
      return Number.isInteger(value) && value >= minimum ? Math.min(value, 8) : fallback;
    });
  return {
    kind,
    n: Math.max(2, Math.min(12, positive(readNumber("explain-size"), 9))),
    kh: state.kernel.length,
    kw: state.kernel[0].length,
    kernel: state.kernel,
    stride: pair("stride-h", "stride-w", 1, 1),
    dilation: pair("dilation-h", "dilation-w", 1, 1),
    outputPadding: pair("output-padding-h", "output-padding-w", 0, 0),
    padding,
  };
}

function updateExplainer() {
  renderExplainer($("explainer"), explainerSettings());
}

// ---------------------------------------------------------------------------------------------
// Images

async function sampleImage(name) {
  if (!state.images.has(name)) {
    state.images.set(name, await loadImageData(`/playground/${name}.jpg`));
  }
  return state.images.get(name);
}

async function updateInput() {
  setStatus("loading", "status_loading");
  try {
    const choice = $("sample").value;
    const image = choice === "upload" && state.upload ? state.upload : await sampleImage(choice);
    let second = null;
    const layout = $("layout").value;
    if (layout === "pair") {
      const name = $("second-sample").value;
      second = await loadImageData(`/playground/${name}.jpg`, Infinity, [image.width, image.height]);
    }
    state.input = imagesToTensor(image, layout, second);
    renderInput();
    setStatus("idle", "status_idle");
  } catch (error) {
    showError({ code: "image_error", message: t("error_image", { message: error.message }), field: "input" });
    setStatus("error", "status_error");
  }
}

async function uploadImage(file) {
  const url = URL.createObjectURL(file);
  try {
    state.upload = await loadImageData(url);
    const option = $("sample").querySelector('option[value="upload"]');
    option.disabled = false;
    $("sample").value = "upload";
  } finally {
    URL.revokeObjectURL(url);
  }
}

// ---------------------------------------------------------------------------------------------
// Presets and events

function applyOperationPreset() {
  const preset = operation();
  const layout = preset.layout || "rgb";
  const c = channelCount(layout);
  const set = (id, value) => {
    $(id).value = String(value);
  };
  set("layout", layout);
  set("kernel-preset", preset.kernel);
  const size = preset.size || [3, 3];
  set("kh", size[0]);
  set("kw", size[1]);
  const stride = preset.stride || [1, 1];
  set("stride-h", stride[0]);
  set("stride-w", stride[1]);
  const dilation = preset.dilation || [1, 1];
  set("dilation-h", dilation[0]);
  set("dilation-w", dilation[1]);
  set("output-padding-h", 0);
  set("output-padding-w", 0);
  set("groups", preset.groups || 1);
  set("out-channels", preset.outChannels || c);
  set("multiplier", preset.multiplier || 1);
  set("mixing", preset.mixing || "identity");
  set("padding-mode", preset.paddingMode || "zeros");
  set("padding-form", preset.padding.form);
  const value = preset.padding.value;
  if (preset.padding.form === "int") set("padding-int", value);
  if (preset.padding.form === "pair") {
    set("padding-h", value[0]);
    set("padding-w", value[1]);
  }
  if (preset.padding.form === "asymmetric") {
    ["top", "bottom", "left", "right"].forEach((side, i) => set(`padding-${side}`, value[i]));
  }
  set("explain-size", preset.explainSize || 9);
  setKernelFromPreset();
  updateVisibility();
}

async function loadDevices() {
  const select = $("device");
  try {
    const response = await fetch("/v1/devices");
    const listing = await response.json();
    for (const device of listing.devices) {
      const option = document.createElement("option");
      option.value = device.id;
      option.textContent = `${device.id}: ${device.name} (${device.platform})`;
      option.selected = device.id === listing.default;
      select.appendChild(option);
    }
  } catch (error) {
    showError({ code: "network_error", message: t("error_network", { message: error.message }), field: "device" });
  }
}

function refreshText() {
  updateExplainer();
  renderResult();
  setStatus($("status").dataset.state, state.status.key, state.status.params);
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === document.documentElement.lang.slice(0, 2)));
  }
}

function bindEvents() {
  const form = $("controls");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("op").addEventListener("change", async () => {
    clearResult();
    clearErrors();
    applyOperationPreset();
    await updateInput();
    updateExplainer();
    scheduleRun();
  });
  for (const id of ["sample", "layout", "second-sample"]) {
    $(id).addEventListener("change", async () => {
      if (id === "layout" && operation().kind === "conv") {
        $("out-channels").value = String(channelCount($("layout").value));
      }
      updateVisibility();
      await updateInput();
      scheduleRun();
    });
  }
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (!file) return;
    try {
      await uploadImage(file);
    } catch (error) {
      showError({ code: "image_error", message: t("error_image", { message: error.message }), field: "input" });
      return;
    }
    await updateInput();
    scheduleRun();
  });
  $("kernel-preset").addEventListener("change", () => {
    setKernelFromPreset();
    updateExplainer();
    scheduleRun();
  });
  for (const id of ["kh", "kw"]) {
    $(id).addEventListener("change", () => {
      resizeKernel();
      updateExplainer();
      scheduleRun();
    });
  }
  $("kernel-grid").addEventListener("change", (event) => {
    const input = event.target;
    const value = Number(input.value);
    state.kernel[Number(input.dataset.y)][Number(input.dataset.x)] = Number.isFinite(value) ? value : 0;
    $("kernel-preset").value = "custom";
    updateExplainer();
    scheduleRun();
  });
  $("mixing").addEventListener("change", () => state.randomMixing.clear());
  $("padding-form").addEventListener("change", updateVisibility);
  form.addEventListener("input", (event) => {
    if (event.target.closest("#kernel-grid") === null) {
      updateExplainer();
    }
  });
  form.addEventListener("change", (event) => {
    const handled = ["op", "sample", "layout", "second-sample", "upload", "kernel-preset", "kh", "kw", "auto-run"];
    if (!handled.includes(event.target.id) && event.target.closest("#kernel-grid") === null) {
      updateExplainer();
      scheduleRun();
    }
  });
  $("display-mode").addEventListener("change", renderResult);
  $("explain-size").addEventListener("input", updateExplainer);
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => {
      setLanguage(button.dataset.lang);
      refreshText();
    });
  }
}

async function main() {
  setLanguage(initialLanguage());
  bindEvents();
  applyOperationPreset();
  refreshText();
  await loadDevices();
  await updateInput();
  updateExplainer();
  document.body.dataset.ready = "true";
  scheduleRun();
}

main();
