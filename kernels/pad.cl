// Materialise zero, reflect, replicate or circular padding of an NCHW tensor.
//
// in  [N, C, H, W]  ->  out [N, C, H + PAD_TOP + PAD_BOTTOM, W + PAD_LEFT + PAD_RIGHT]
// Each work-item writes one output row segment of up to 4 elements; global size is
// (ceil(OW / 4), OH, N * C).
//
// Build options: H, W, OH, OW, PAD_TOP, PAD_LEFT, and PAD_MODE (0 zeros, 1 reflect,
// 2 replicate, 3 circular), with index maps matching torch.nn.functional.pad.

inline int pad_source_index(int i, int size) {
#if PAD_MODE <= 1
    // reflect without repeating the edge: -1 -> 1, size -> size - 2 (pad < size is checked)
    if (i < 0) i = -i;
    if (i >= size) i = 2 * (size - 1) - i;
    return i;
#elif PAD_MODE == 2
    return clamp(i, 0, size - 1);
#else
    // circular: pad <= size is checked, so one wrap is enough
    if (i < 0) i += size;
    if (i >= size) i -= size;
    return i;
#endif
}

__kernel void pad_nchw(__global const real* restrict in, __global real* restrict out) {
    const int x0 = get_global_id(0) * 4;
    const int y = get_global_id(1);
    const int plane = get_global_id(2);

    __global real* dst = out + ((long)plane * OH + y) * OW;
#if PAD_MODE == 0
    const int sy = y - PAD_TOP;
    const bool row_inside = sy >= 0 && sy < H;
    __global const real* src = in + ((long)plane * H + (row_inside ? sy : 0)) * W;
    for (int j = 0; j < 4; ++j) {
        const int x = x0 + j;
        const int sx = x - PAD_LEFT;
        if (x < OW) dst[x] = (row_inside && sx >= 0 && sx < W) ? src[sx] : (real)0;
    }
#else
    const int sy = pad_source_index(y - PAD_TOP, H);
    __global const real* src = in + ((long)plane * H + sy) * W;
    for (int j = 0; j < 4; ++j) {
        const int x = x0 + j;
        if (x < OW) dst[x] = src[pad_source_index(x - PAD_LEFT, W)];
    }
#endif
}
