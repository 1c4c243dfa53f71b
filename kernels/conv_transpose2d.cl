// Transposed 2-D convolution as a gather (no atomics, no zero insertion).
//
// in   [N, C_IN, H, W]
// wpk  [GROUPS][KB][CIN_PG][KH][KW][4]  weight [C_IN, KOUT_PG, KH, KW] repacked so that four
//                                       adjacent output channels of a block are adjacent;
//                                       channels past KOUT_PG are zero
// out  [N, K, OH, OW]                   K = GROUPS * KOUT_PG
//
// out[n, g*KOUT_PG + k, oy, ox] = sum over ic, ky, kx with oy + PAD_TOP - ky*DH = iy*SH and
//   ox + PAD_LEFT - kx*DW = ix*SW (0 <= iy < H, 0 <= ix < W) of
//   in[n, g*CIN_PG + ic, iy, ix] * w[g*CIN_PG + ic, k, ky, kx].
// OH and OW already include output_padding and the bottom/right pads.
//
// Work decomposition: a work-item computes 4 output channels of one output pixel as a float4
// (or double4). Global size: (OW, OH, N * GROUPS * KB).
//
// Build options: N, C_IN, H, W, K, OH, OW, KH, KW, SH, SW, DH, DW, PAD_TOP, PAD_LEFT, GROUPS,
// CIN_PG, KOUT_PG, KB = ceil(KOUT_PG / 4).

__kernel void conv_transpose2d_gather(__global const real* restrict in,
                                      __global const real* restrict wpk,
                                      __global const real* restrict bias,
                                      __global real* restrict out) {
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    const int block = get_global_id(2);
    const int kb = block % KB;
    const int g = (block / KB) % GROUPS;
    const int n = block / (KB * GROUPS);

    real4 acc = (real4)(0);
    __global const real* src = in + ((long)n * C_IN + g * CIN_PG) * H * W;
    __global const real* wblock = wpk + (long)(g * KB + kb) * CIN_PG * KH * KW * 4;

    for (int ky = 0; ky < KH; ++ky) {
        const int ty = oy + PAD_TOP - ky * DH;
        if (ty < 0 || ty % SH != 0) continue;
        const int iy = ty / SH;
        if (iy >= H) continue;
        for (int kx = 0; kx < KW; ++kx) {
            const int tx = ox + PAD_LEFT - kx * DW;
            if (tx < 0 || tx % SW != 0) continue;
            const int ix = tx / SW;
            if (ix >= W) continue;
            for (int ic = 0; ic < CIN_PG; ++ic) {
                const real x = src[((long)ic * H + iy) * W + ix];
                const real4 wv = vload_real4(0, wblock + ((ic * KH + ky) * KW + kx) * 4);
                acc = mad((real4)(x), wv, acc);
            }
        }
    }

    real values[4];
    vstore4(acc, 0, values);
    for (int o = 0; o < 4; ++o) {
        const int k_local = kb * 4 + o;
        if (k_local >= KOUT_PG) break;
        const int k = g * KOUT_PG + k_local;
        out[(((long)n * K + k) * OH + oy) * OW + ox] = epilogue(values[o], bias, k);
    }
}
