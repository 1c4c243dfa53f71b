// Interface text in English and Simplified Chinese. The Chinese text uses the standard terms
// (卷积核 for a convolution kernel, 内核 for an OpenCL kernel, 感受野 for receptive field).
// API names, field names and JSON stay in English in both languages.

const STORAGE_KEY = "clconv.playground.language";

export const STRINGS = {
  en: {
    title: "clconv playground",
    subtitle: "Run every convolution family on a real image through the clconv REST API.",
    api_docs: "API reference",
    operation: "Operation",
    op_conv2d_regular: "conv2d: regular",
    op_conv2d_pointwise: "conv2d: 1×1 (pointwise)",
    op_conv2d_grouped: "conv2d: grouped",
    op_conv2d_depthwise: "conv2d: depthwise",
    op_conv2d_dilated: "conv2d: dilated (atrous)",
    op_conv_transpose2d: "conv_transpose2d: transposed",
    op_depthwise_separable_conv2d: "depthwise_separable_conv2d",
    op_spatially_separable_conv2d: "spatially_separable_conv2d",
    op_pipeline: "pipeline: conv2d, then 2× transposed upsampling",
    device: "Device",
    device_default: "default",
    image: "Image",
    sample: "Sample image",
    sample_astronaut: "Astronaut (NASA)",
    sample_coffee: "Coffee cup",
    sample_chelsea: "Chelsea the cat",
    sample_upload: "Uploaded file",
    upload: "Upload an image",
    upload_hint: "Decoded in the browser and scaled to at most 256 px.",
    layout: "Input channels",
    layout_rgb: "RGB (3 channels)",
    layout_gray: "Grayscale (1 channel)",
    layout_pair: "Two images stacked (6 channels)",
    second_sample: "Second image (channels 3–5)",
    kernel: "Kernel",
    kernel_preset: "Preset",
    kernel_identity: "Identity",
    kernel_box: "Box blur",
    kernel_gaussian: "Gaussian blur",
    kernel_sobel_x: "Sobel x",
    kernel_sobel_y: "Sobel y",
    kernel_sharpen: "Sharpen",
    kernel_emboss: "Emboss",
    kernel_laplacian: "Laplacian",
    kernel_bilinear: "Bilinear 2× (for stride 2)",
    kernel_random: "Random",
    kernel_custom: "Custom (edited)",
    kernel_size: "Size kh × kw",
    kernel_hint:
      "Edit any tap. Each output channel applies this kernel to the input channels that the channel mixing selects.",
    kernel_hint_multiplier:
      "With depth multiplier m, copy r of each channel uses the kernel rotated by r × 90°.",
    settings: "Settings",
    stride: "Stride (h, w)",
    padding: "Padding",
    padding_int: "int",
    padding_pair: "pair [ph, pw]",
    padding_asymmetric: "asymmetric {top, bottom, left, right}",
    padding_same: "\"same\"",
    padding_valid: "\"valid\"",
    padding_top: "top",
    padding_bottom: "bottom",
    padding_left: "left",
    padding_right: "right",
    padding_mode: "padding_mode",
    dilation: "Dilation (h, w)",
    groups: "Groups",
    out_channels: "Output channels K",
    multiplier: "Depth multiplier m",
    mixing: "Channel mixing",
    mixing_identity: "Identity (channel i → i)",
    mixing_average: "Average of the group's channels",
    mixing_reverse: "Reverse order (RGB → BGR)",
    mixing_sepia: "Sepia (3 → 3 channels)",
    mixing_random: "Random",
    mixing_hint_pointwise: "The 1×1 step's weights [K, C·m, 1, 1].",
    output_padding: "output_padding (h, w)",
    bias: "Bias (every output channel)",
    bias_placeholder: "none",
    activation: "Activation",
    activation_none: "none",
    run: "Run",
    auto_run: "Run on every change",
    status_idle: "Ready.",
    status_loading: "Loading the image…",
    status_running: "Running…",
    status_done: "Done in {ms} ms (round trip).",
    status_error: "The request failed: see the message by the field.",
    request_body: "Request body (tensors shortened)",
    input: "Input",
    output: "Output",
    display: "Display",
    display_minmax: "Stretch min–max to 0–255",
    display_clip: "Clip to [0, 1]",
    range: "range [{min}, {max}]",
    channels: "Output channels (each stretched to its own range)",
    channel: "ch {index}",
    shape: "Output shape",
    flops: "FLOPs",
    macs: "MACs",
    params: "Parameters",
    receptive_field: "Receptive field",
    effective_stride: "Effective stride",
    algorithm: "Algorithm (OpenCL kernels)",
    used_device: "Device",
    timings: "Timing breakdown (ms, from OpenCL profiling events)",
    timing_queue: "queue",
    timing_upload: "upload",
    timing_compute: "compute",
    timing_download: "download",
    timing_total: "total",
    no_result: "Run an operation to see the output.",
    error_network: "Could not reach the server: {message}",
    error_image: "Could not decode the image: {message}",
    explainer: "How one output pixel is computed",
    explainer_hint:
      "Hover or focus an output pixel to highlight the input pixels and kernel taps that produce it. The diagram uses a small input and the settings above.",
    explainer_size: "Diagram input size",
    padded_input: "Padded input ({rows}×{cols})",
    output_grid: "Output ({rows}×{cols})",
    kernel_grid: "Kernel ({rows}×{cols})",
    kernel_dilated: "Dilated kernel: {kh}×{kw} taps cover {rows}×{cols}",
    kernel_flipped: "Flipped kernel (rotated 180°)",
    original_input: "Input ({rows}×{cols})",
    zero_inserted: "Zero-inserted and padded input ({rows}×{cols})",
    legend_input: "input pixel",
    legend_padding: "padding",
    legend_inserted: "inserted zero",
    legend_tap: "tap of the hovered output pixel",
    legend_cropped: "Negative padding crops: {rows} row(s) and {cols} column(s) are left out.",
    pixel_formula:
      "out[{oy}, {ox}] = Σ w[i, j] · in[{oy}·{sh} − {pt} + i·{dh}, {ox}·{sw} − {pl} + j·{dw}]: {taps} taps, {pad} on padding.",
    pixel_formula_transposed:
      "out[{oy}, {ox}] is a stride-1 convolution of the zero-inserted input with the flipped kernel: {taps} taps, {real} on input pixels.",
    size_formula:
      "H_out = ⌊(H + p_top + p_bottom − d·(kh − 1) − 1) / s⌋ + 1 = ⌊({h} + {pt} + {pb} − {dh}·{kh1} − 1) / {sh}⌋ + 1 = {oh}",
    size_formula_transposed:
      "H_out = (H − 1)·s − p_top − p_bottom + d·(kh − 1) + output_padding + 1 = ({h} − 1)·{sh} − {pt} − {pb} + {dh}·{kh1} + {oph} + 1 = {oh}",
    transposed_note:
      "A transposed convolution equals a stride-1 convolution with the flipped kernel over the input with s − 1 zeros inserted between pixels and d·(k − 1) − p rows and columns of zero padding on each side (plus output_padding at the bottom and right).",
    separable_note_dw:
      "The diagram shows the depthwise step. The 1×1 step then mixes channels at each pixel, so it keeps this receptive field.",
    separable_note_spatial:
      "The server splits the kernel into a kh×1 pass and a 1×kw pass. Together they read the same kh×kw window as shown here.",
    same_needs_stride:
      "padding \"same\" needs stride 1; the diagram uses padding 0.",
    transposed_no_strings:
      "conv_transpose2d takes no \"same\" or \"valid\" padding; the diagram uses padding 0.",
    empty_output: "The output would be empty ({rows}×{cols}): add padding or use a smaller kernel.",
    rf_title: "Receptive field over stacked layers (height, kernel height {k})",
    rf_layers: "layers",
    rf_linear: "stacked {k}×{k}, dilation 1 (linear: 1 + L·(k − 1))",
    rf_doubling: "dilation doubling 1, 2, 4, … (exponential: 1 + (k − 1)·(2^L − 1))",
    rf_current: "these settings repeated (stride {s}, dilation {d})",
    language: "Language",
    footer:
      "This page calls only this server's /v1 API. Sample photographs: scikit-image's data module (public domain and CC0).",
  },
  zh: {
    title: "clconv 演示平台",
    subtitle: "通过 clconv 的 REST API，在真实图像上运行每一种卷积。",
    api_docs: "API 参考",
    operation: "运算",
    op_conv2d_regular: "conv2d：常规卷积",
    op_conv2d_pointwise: "conv2d：1×1 卷积（逐点卷积）",
    op_conv2d_grouped: "conv2d：分组卷积",
    op_conv2d_depthwise: "conv2d：深度卷积（逐通道卷积）",
    op_conv2d_dilated: "conv2d：空洞卷积（扩张卷积）",
    op_conv_transpose2d: "conv_transpose2d：转置卷积",
    op_depthwise_separable_conv2d: "depthwise_separable_conv2d：深度可分离卷积",
    op_spatially_separable_conv2d: "spatially_separable_conv2d：空间可分离卷积",
    op_pipeline: "pipeline：conv2d 后接 2 倍转置卷积上采样",
    device: "设备",
    device_default: "默认",
    image: "图像",
    sample: "示例图像",
    sample_astronaut: "宇航员（NASA）",
    sample_coffee: "咖啡杯",
    sample_chelsea: "猫 Chelsea",
    sample_upload: "上传的文件",
    upload: "上传图像",
    upload_hint: "在浏览器中解码，并缩放到最长边不超过 256 像素。",
    layout: "输入通道",
    layout_rgb: "RGB（3 通道）",
    layout_gray: "灰度（1 通道）",
    layout_pair: "两幅图像叠加（6 通道）",
    second_sample: "第二幅图像（通道 3–5）",
    kernel: "卷积核",
    kernel_preset: "预设",
    kernel_identity: "恒等",
    kernel_box: "均值模糊",
    kernel_gaussian: "高斯模糊",
    kernel_sobel_x: "Sobel x",
    kernel_sobel_y: "Sobel y",
    kernel_sharpen: "锐化",
    kernel_emboss: "浮雕",
    kernel_laplacian: "拉普拉斯",
    kernel_bilinear: "双线性 2 倍（用于步长 2）",
    kernel_random: "随机",
    kernel_custom: "自定义（已编辑）",
    kernel_size: "尺寸 kh × kw",
    kernel_hint: "可以修改任意一个权重。每个输出通道把这个卷积核作用在通道混合所选的输入通道上。",
    kernel_hint_multiplier: "深度乘数为 m 时，每个通道的第 r 份副本使用旋转 r × 90° 的卷积核。",
    settings: "参数",
    stride: "步长（h, w）",
    padding: "填充",
    padding_int: "整数",
    padding_pair: "二元组 [ph, pw]",
    padding_asymmetric: "非对称 {top, bottom, left, right}",
    padding_same: "\"same\"",
    padding_valid: "\"valid\"",
    padding_top: "上",
    padding_bottom: "下",
    padding_left: "左",
    padding_right: "右",
    padding_mode: "padding_mode（填充方式）",
    dilation: "空洞率（h, w）",
    groups: "分组数",
    out_channels: "输出通道数 K",
    multiplier: "深度乘数 m",
    mixing: "通道混合",
    mixing_identity: "恒等（通道 i → i）",
    mixing_average: "组内通道取平均",
    mixing_reverse: "顺序反转（RGB → BGR）",
    mixing_sepia: "棕褐色（3 → 3 通道）",
    mixing_random: "随机",
    mixing_hint_pointwise: "逐点卷积这一步的权重 [K, C·m, 1, 1]。",
    output_padding: "输出填充 output_padding（h, w）",
    bias: "偏置（所有输出通道）",
    bias_placeholder: "无",
    activation: "激活函数",
    activation_none: "无",
    run: "运行",
    auto_run: "修改后自动运行",
    status_idle: "就绪。",
    status_loading: "正在加载图像…",
    status_running: "运行中…",
    status_done: "完成，往返耗时 {ms} ms。",
    status_error: "请求失败：错误信息显示在对应的字段旁。",
    request_body: "请求体（张量已缩写）",
    input: "输入",
    output: "输出",
    display: "显示",
    display_minmax: "把最小值–最大值拉伸到 0–255",
    display_clip: "截断到 [0, 1]",
    range: "范围 [{min}, {max}]",
    channels: "输出通道（各自按自身范围拉伸）",
    channel: "通道 {index}",
    shape: "输出形状",
    flops: "计算量（FLOPs）",
    macs: "乘加次数（MACs）",
    params: "参数量",
    receptive_field: "感受野",
    effective_stride: "等效步长",
    algorithm: "算法（OpenCL 内核）",
    used_device: "设备",
    timings: "耗时分解（ms，来自 OpenCL 性能分析事件）",
    timing_queue: "排队",
    timing_upload: "上传",
    timing_compute: "计算",
    timing_download: "下载",
    timing_total: "总计",
    no_result: "运行一个运算即可看到输出。",
    error_network: "无法连接服务器：{message}",
    error_image: "无法解码图像：{message}",
    explainer: "一个输出像素是怎样算出来的",
    explainer_hint:
      "把鼠标悬停在（或用 Tab 键选中）某个输出像素上，即可高亮产生它的输入像素和卷积核权重。示意图使用一个小输入和上面的参数。",
    explainer_size: "示意图输入尺寸",
    padded_input: "填充后的输入（{rows}×{cols}）",
    output_grid: "输出（{rows}×{cols}）",
    kernel_grid: "卷积核（{rows}×{cols}）",
    kernel_dilated: "空洞卷积核：{kh}×{kw} 个权重覆盖 {rows}×{cols}",
    kernel_flipped: "翻转后的卷积核（旋转 180°）",
    original_input: "输入（{rows}×{cols}）",
    zero_inserted: "插零并填充后的输入（{rows}×{cols}）",
    legend_input: "输入像素",
    legend_padding: "填充",
    legend_inserted: "插入的零",
    legend_tap: "当前输出像素用到的位置",
    legend_cropped: "负的填充等于裁剪：去掉了 {rows} 行和 {cols} 列。",
    pixel_formula:
      "out[{oy}, {ox}] = Σ w[i, j] · in[{oy}·{sh} − {pt} + i·{dh}, {ox}·{sw} − {pl} + j·{dw}]：共 {taps} 个位置，其中 {pad} 个落在填充上。",
    pixel_formula_transposed:
      "out[{oy}, {ox}] 等于对插零后的输入用翻转的卷积核做步长 1 的卷积：共 {taps} 个位置，其中 {real} 个是输入像素。",
    size_formula:
      "H_out = ⌊(H + p_top + p_bottom − d·(kh − 1) − 1) / s⌋ + 1 = ⌊({h} + {pt} + {pb} − {dh}·{kh1} − 1) / {sh}⌋ + 1 = {oh}",
    size_formula_transposed:
      "H_out = (H − 1)·s − p_top − p_bottom + d·(kh − 1) + output_padding + 1 = ({h} − 1)·{sh} − {pt} − {pb} + {dh}·{kh1} + {oph} + 1 = {oh}",
    transposed_note:
      "转置卷积等价于：在输入像素之间插入 s − 1 个零，每边补 d·(k − 1) − p 行（列）零（下边和右边再加上输出填充），再用翻转后的卷积核做步长 1 的卷积。",
    separable_note_dw: "示意图展示的是深度卷积这一步。随后的 1×1 卷积只在每个像素上混合通道，感受野不变。",
    separable_note_spatial:
      "服务器把卷积核拆成 kh×1 和 1×kw 两步。两步合起来读取的窗口与图中的 kh×kw 窗口相同。",
    same_needs_stride: "填充 \"same\" 要求步长为 1；示意图按填充 0 绘制。",
    transposed_no_strings: "conv_transpose2d 不接受 \"same\" 或 \"valid\" 填充；示意图按填充 0 绘制。",
    empty_output: "输出为空（{rows}×{cols}）：请增加填充或使用更小的卷积核。",
    rf_title: "多层叠加后的感受野（高度方向，卷积核高度 {k}）",
    rf_layers: "层数",
    rf_linear: "叠加 {k}×{k}，空洞率 1（线性增长：1 + L·(k − 1)）",
    rf_doubling: "空洞率依次加倍 1, 2, 4, …（指数增长：1 + (k − 1)·(2^L − 1)）",
    rf_current: "重复当前参数（步长 {s}，空洞率 {d}）",
    language: "语言",
    footer:
      "本页面只调用本服务器的 /v1 API。示例照片来自 scikit-image 的 data 模块（公有领域和 CC0）。",
  },
};

let current = "en";

/** Pick the stored language, else the browser's preference (Chinese for zh-*), else English. */
export function initialLanguage() {
  let stored = null;
  try {
    stored = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    stored = null; // Storage can be disabled; the page then starts in the browser's language.
  }
  if (stored && stored in STRINGS) {
    return stored;
  }
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

/** Format the string `key` in the current language, replacing each `{name}` by params[name]. */
export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in params ? String(params[name]) : match));
}

/** Switch the language, store the choice and translate every element with data-i18n. */
export function setLanguage(language) {
  current = language in STRINGS ? language : "en";
  try {
    window.localStorage.setItem(STORAGE_KEY, current);
  } catch {
    // The choice then lasts only for this page view.
  }
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) {
    element.placeholder = t(element.dataset.i18nPlaceholder);
  }
  for (const element of document.querySelectorAll("[data-i18n-title]")) {
    element.title = t(element.dataset.i18nTitle);
  }
  document.title = t("title");
}
