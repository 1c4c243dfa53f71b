// Operation presets, kernel presets and the weight tensors built from them.

// Each operation preset names its endpoint, its kind (which fields apply) and the settings it
// starts from. Every setting can be changed afterwards.
export const OPERATIONS = {
  conv2d_regular: {
    endpoint: "conv2d",
    kind: "conv",
    kernel: "emboss",
    layout: "rgb",
    mixing: "average",
    padding: { form: "int", value: 1 },
  },
  conv2d_pointwise: {
    endpoint: "conv2d",
    kind: "pointwise",
    kernel: "identity",
    size: [1, 1],
    layout: "rgb",
    mixing: "reverse",
    padding: { form: "int", value: 0 },
  },
  conv2d_grouped: {
    endpoint: "conv2d",
    kind: "conv",
    kernel: "sobel_x",
    layout: "pair",
    groups: 2,
    outChannels: 6,
    mixing: "average",
    padding: { form: "int", value: 1 },
  },
  conv2d_depthwise: {
    endpoint: "conv2d",
    kind: "depthwise",
    kernel: "sobel_x",
    layout: "rgb",
    multiplier: 2,
    padding: { form: "pair", value: [1, 1] },
  },
  conv2d_dilated: {
    endpoint: "conv2d",
    kind: "conv",
    kernel: "laplacian",
    layout: "rgb",
    mixing: "identity",
    dilation: [4, 4],
    padding: { form: "same" },
  },
  conv_transpose2d: {
    endpoint: "conv_transpose2d",
    kind: "transpose",
    kernel: "bilinear",
    layout: "rgb",
    mixing: "identity",
    stride: [2, 2],
    padding: { form: "int", value: 1 },
    explainSize: 5,
  },
  depthwise_separable_conv2d: {
    endpoint: "depthwise_separable_conv2d",
    kind: "dwsep",
    kernel: "gaussian",
    size: [5, 5],
    layout: "rgb",
    mixing: "sepia",
    padding: { form: "same" },
  },
  spatially_separable_conv2d: {
    endpoint: "spatially_separable_conv2d",
    kind: "spatial",
    kernel: "sobel_y",
    layout: "rgb",
    groups: 3,
    mixing: "identity",
    padding: { form: "asymmetric", value: [1, 1, 1, 1] },
    paddingMode: "replicate",
  },
  pipeline: {
    endpoint: "pipeline",
    kind: "pipeline",
    kernel: "sharpen",
    layout: "rgb",
    padding: { form: "int", value: 1 },
  },
};

const FIXED_KERNELS = {
  sobel_x: [
    [-1, 0, 1],
    [-2, 0, 2],
    [-1, 0, 1],
  ],
  sobel_y: [
    [-1, -2, -1],
    [0, 0, 0],
    [1, 2, 1],
  ],
  sharpen: [
    [0, -1, 0],
    [-1, 5, -1],
    [0, -1, 0],
  ],
  emboss: [
    [-2, -1, 0],
    [-1, 1, 1],
    [0, 1, 2],
  ],
  laplacian: [
    [0, 1, 0],
    [1, -4, 1],
    [0, 1, 0],
  ],
};

// Rows are output channels, columns input channels (the classic sepia tone matrix).
const SEPIA = [
  [0.393, 0.769, 0.189],
  [0.349, 0.686, 0.168],
  [0.272, 0.534, 0.131],
];

function binomialRow(n) {
  const row = [1];
  for (let i = 1; i < n; i += 1) {
    row.push((row[i - 1] * (n - i)) / i);
  }
  return row;
}

function outer(column, row) {
  return column.map((a) => row.map((b) => a * b));
}

/** 1-D bilinear interpolation weights for upsampling by `factor` (2·factor taps). */
function bilinearRow(factor) {
  const size = 2 * factor;
  const centre = (size - 1) / 2;
  return Array.from({ length: size }, (_, i) => 1 - Math.abs(i - centre) / factor);
}

/**
 * Build the kh×kw values of a kernel preset as an array of rows. Fixed presets (Sobel,
 * sharpen, emboss, Laplacian) are 3×3 and bilinear is 4×4, whatever size is asked for.
 */
export function makeKernel(name, kh, kw, random = Math.random) {
  if (name in FIXED_KERNELS) {
    return FIXED_KERNELS[name].map((row) => row.slice());
  }
  if (name === "bilinear") {
    return outer(bilinearRow(2), bilinearRow(2));
  }
  if (name === "box") {
    return outer(Array(kh).fill(1 / kh), Array(kw).fill(1 / kw));
  }
  if (name === "gaussian") {
    const column = binomialRow(kh);
    const row = binomialRow(kw);
    const sum = column.reduce((a, b) => a + b, 0) * row.reduce((a, b) => a + b, 0);
    return outer(column, row).map((values) => values.map((v) => v / sum));
  }
  if (name === "random") {
    return Array.from({ length: kh }, () =>
      Array.from({ length: kw }, () => Math.round((random() * 2 - 1) * 100) / 100),
    );
  }
  const identity = Array.from({ length: kh }, () => Array(kw).fill(0));
  identity[Math.floor(kh / 2)][Math.floor(kw / 2)] = 1;
  return identity;
}

/** Rotate a kernel by `quarterTurns` × 90°; a non-square kernel is rotated by 180° instead. */
export function rotateKernel(kernel, quarterTurns) {
  const kh = kernel.length;
  const kw = kernel[0].length;
  let turns = ((quarterTurns % 4) + 4) % 4;
  if (kh !== kw && turns % 2 === 1) {
    turns = 2;
  }
  let result = kernel.map((row) => row.slice());
  for (let turn = 0; turn < turns; turn += 1) {
    const size = result.length;
    result = Array.from({ length: result[0].length }, (_, y) =>
      Array.from({ length: size }, (_, x) => result[size - 1 - x][y]),
    );
  }
  return result;
}

/**
 * Return the weight of output channel `ol` (its index inside the group) on input channel `j`
 * (of `cg` in the group) for a channel-mixing mode. `randomMatrix(ol, j)` returns the random
 * mode's values.
 */
export function mixingWeight(mode, ol, j, cg, randomMatrix) {
  if (mode === "average") {
    return 1 / cg;
  }
  if (mode === "reverse") {
    return cg - 1 - (ol % cg) === j ? 1 : 0;
  }
  if (mode === "sepia" && cg === 3) {
    return SEPIA[ol % 3][j];
  }
  if (mode === "random") {
    return randomMatrix(ol, j) / cg;
  }
  return ol % cg === j ? 1 : 0;
}

/** Fill a Float32Array of shape [outer, inner, kh, kw] from value(o, i, y, x). */
export function buildWeight(outer, inner, kh, kw, value) {
  const data = new Float32Array(outer * inner * kh * kw);
  let index = 0;
  for (let o = 0; o < outer; o += 1) {
    for (let i = 0; i < inner; i += 1) {
      for (let y = 0; y < kh; y += 1) {
        for (let x = 0; x < kw; x += 1) {
          data[index] = value(o, i, y, x);
          index += 1;
        }
      }
    }
  }
  return { shape: [outer, inner, kh, kw], data };
}
