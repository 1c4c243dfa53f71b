// Tensor encoding for the API (base64 float32, little-endian) and conversion between images
// and NCHW tensors.

export const MAX_IMAGE_SIDE = 256;

/** Encode a Float32Array as the API's base64 tensor. Browsers on x86 and ARM are little-endian. */
export function encodeTensor(shape, data) {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const chunks = [];
  const chunkSize = 0x8000;
  for (let i = 0; i < bytes.length; i += chunkSize) {
    chunks.push(String.fromCharCode.apply(null, bytes.subarray(i, i + chunkSize)));
  }
  return { shape, dtype: "float32", base64: btoa(chunks.join("")) };
}

/** Decode a tensor of the API (base64 or flat or nested data) to {shape, data: Float32Array}. */
export function decodeTensor(tensor) {
  if (tensor.base64 !== undefined) {
    const binary = atob(tensor.base64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    const data =
      tensor.dtype === "float64" ? Float32Array.from(new Float64Array(bytes.buffer)) : new Float32Array(bytes.buffer);
    return { shape: tensor.shape, data };
  }
  return { shape: tensor.shape, data: Float32Array.from(tensor.data.flat(Infinity)) };
}

/** Replace tensor values by their shape, for the plan request and the request preview. */
export function shapeOnly(value) {
  if (Array.isArray(value)) {
    return value.map(shapeOnly);
  }
  if (value && typeof value === "object") {
    if ("shape" in value && "dtype" in value) {
      return { shape: value.shape, dtype: value.dtype };
    }
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, shapeOnly(item)]));
  }
  return value;
}

/** Load an image URL into an ImageData, scaled so that its longer side is at most `maxSide`. */
export function loadImageData(url, maxSide = MAX_IMAGE_SIDE, size = null) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => {
      const scale = Math.min(1, maxSide / Math.max(image.naturalWidth, image.naturalHeight));
      const width = size ? size[0] : Math.max(1, Math.round(image.naturalWidth * scale));
      const height = size ? size[1] : Math.max(1, Math.round(image.naturalHeight * scale));
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0, width, height);
      resolve(context.getImageData(0, 0, width, height));
    };
    image.onerror = () => reject(new Error(`cannot decode ${url}`));
    image.src = url;
  });
}

/**
 * Convert images to one NCHW float32 tensor with values in [0, 1]: "rgb" gives 3 channels,
 * "gray" 1 (Rec. 601 luma), "pair" 6 (the RGB of `image`, then of `second`, same size).
 */
export function imagesToTensor(image, layout, second) {
  const { width, height } = image;
  const plane = width * height;
  const sources = layout === "pair" ? [image, second] : [image];
  const channels = layout === "gray" ? 1 : 3 * sources.length;
  const data = new Float32Array(channels * plane);
  sources.forEach((source, s) => {
    const pixels = source.data;
    for (let p = 0; p < plane; p += 1) {
      const r = pixels[4 * p] / 255;
      const g = pixels[4 * p + 1] / 255;
      const b = pixels[4 * p + 2] / 255;
      if (layout === "gray") {
        data[p] = 0.299 * r + 0.587 * g + 0.114 * b;
      } else {
        data[(3 * s) * plane + p] = r;
        data[(3 * s + 1) * plane + p] = g;
        data[(3 * s + 2) * plane + p] = b;
      }
    }
  });
  return { shape: [1, channels, height, width], data };
}

/** Minimum and maximum of the finite values of some channels of an NCHW tensor. */
export function channelRange(tensor, channels) {
  const [, , height, width] = tensor.shape;
  const plane = height * width;
  let min = Infinity;
  let max = -Infinity;
  for (const c of channels) {
    for (let p = c * plane; p < (c + 1) * plane; p += 1) {
      const v = tensor.data[p];
      if (Number.isFinite(v)) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
    }
  }
  if (min === Infinity) {
    return { min: 0, max: 0 };
  }
  return { min, max };
}

/**
 * Render channels of an NCHW tensor (1 as gray, 3 as RGB) to ImageData. "minmax" maps the
 * shared range of those channels to 0–255; "clip" maps [0, 1] and clips. Returns the range too.
 */
export function tensorToImageData(tensor, channels, mode) {
  const [, , height, width] = tensor.shape;
  const plane = height * width;
  const range = channelRange(tensor, channels);
  const low = mode === "clip" ? 0 : range.min;
  const span = mode === "clip" ? 1 : range.max - range.min;
  const scale = span > 0 ? 255 / span : 0;
  const image = new ImageData(width, height);
  const pixels = image.data;
  for (let p = 0; p < plane; p += 1) {
    for (let k = 0; k < 3; k += 1) {
      const c = channels[Math.min(k, channels.length - 1)];
      const v = tensor.data[c * plane + p];
      const scaled = span > 0 ? (v - low) * scale : 128;
      pixels[4 * p + k] = Number.isNaN(v) ? 255 : Math.max(0, Math.min(255, scaled));
    }
    pixels[4 * p + 3] = 255;
  }
  return { image, range };
}

/** Draw ImageData on a canvas, resizing the canvas to it. */
export function drawImageData(canvas, image) {
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
}
