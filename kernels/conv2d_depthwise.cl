// Depthwise convolution: groups = C_IN, one input channel per group, depth multiplier MULT.
// out[n, k, oy, ox] = sum_{ky, kx} in[n, k / MULT, iy, ix] * w[k, 0, ky, kx]
//   with iy = oy*SH - PAD_TOP + ky*DH and ix = ox*SW - PAD_LEFT + kx*DW (zero outside).
//
// in [N, C_IN, H, W], w [K, 1, KH, KW] with K = C_IN * MULT, out [N, K, OH, OW].
//
// Work decomposition: a work-item computes 4 adjacent output columns of one output row of one
// channel as a float4 (or double4); the KH*KW taps are held in private memory. Global size:
// (ceil(OW / 4), OH, N * K).
//
// Build options: N, C_IN, H, W, K, OH, OW, KH, KW, SH, SW, DH, DW, PAD_TOP, PAD_LEFT, MULT.

__kernel void conv2d_depthwise(__global const real* restrict in,
                               __global const real* restrict w,
                               __global const real* restrict bias,
                               __global real* restrict out) {
    const int ox0 = get_global_id(0) * 4;
    const int oy = get_global_id(1);
    const int plane = get_global_id(2);
    const int k = plane % K;
    const int n = plane / K;

    real taps[KH * KW];
    for (int t = 0; t < KH * KW; ++t) taps[t] = w[k * KH * KW + t];

    __global const real* src = in + ((long)n * C_IN + k / MULT) * H * W;
    const int iy0 = oy * SH - PAD_TOP;
    const int ix0 = ox0 * SW - PAD_LEFT;
    real4 acc = (real4)(0);
    for (int ky = 0; ky < KH; ++ky) {
        const int iy = iy0 + ky * DH;
        if (iy < 0 || iy >= H) continue;
        __global const real* row = src + iy * W;
        for (int kx = 0; kx < KW; ++kx) {
            acc = mad((real4)(taps[ky * KW + kx]), load_columns(row, ix0 + kx * DW), acc);
        }
    }

    __global real* dst = out + (((long)n * K + k) * OH + oy) * OW;
    real values[4];
    vstore4(acc, 0, values);
    for (int j = 0; j < 4; ++j) {
        if (ox0 + j < OW) dst[ox0 + j] = epilogue(values[j], bias, k);
    }
}
