// Direct 2-D convolution, register-blocked over output channels and output columns.
//
// in   [N, C_IN, H, W]                       NCHW
// wpk  [GROUPS][KB][CIN_PG][KH][KW][OCB]      weight [K, CIN_PG, KH, KW] repacked on the host so
//                                            the OCB output channels of one block are adjacent;
//                                            channels past KOUT_PG are zero
// out  [N, K, OH, OW]                        K = GROUPS * KOUT_PG
//
// out[n, g*KOUT_PG + k, oy, ox] = sum_{ic, ky, kx} in[n, IN_CHANNEL(g, ic), iy, ix] * w[..]
//   with iy = oy*SH - PAD_TOP + ky*DH and ix = ox*SW - PAD_LEFT + kx*DW; taps outside the input
//   read zero (zero padding, possibly asymmetric: the bottom/right pads only enter via OH, OW).
//
// Work decomposition: a work-item computes OCB output channels x 4 adjacent output columns of
// one output row, as OCB float4 (or double4) accumulators. Global size:
// (ceil(OW / 4), OH, N * GROUPS * KB). No local memory: CPU runtimes cache the input rows.
//
// Build options: N, C_IN, H, W, K, OH, OW, KH, KW, SH, SW, DH, DW, PAD_TOP, PAD_LEFT, GROUPS,
// CIN_PG, KOUT_PG, OCB (1, 2, 4 or 8), KB = ceil(KOUT_PG / OCB), and optionally CHANNEL_MAP_KG
// and CHANNEL_MAP_CG, which reorder input channels for the second pass of a factored rank-1
// convolution (see IN_CHANNEL in common.cl).

__kernel void conv2d_direct(__global const real* restrict in,
                            __global const real* restrict wpk,
                            __global const real* restrict bias,
                            __global real* restrict out) {
    const int ox0 = get_global_id(0) * 4;
    const int oy = get_global_id(1);
    const int block = get_global_id(2);
    const int kb = block % KB;
    const int g = (block / KB) % GROUPS;
    const int n = block / (KB * GROUPS);

    real4 acc[OCB];
    for (int o = 0; o < OCB; ++o) acc[o] = (real4)(0);

    const int iy0 = oy * SH - PAD_TOP;
    const int ix0 = ox0 * SW - PAD_LEFT;
    __global const real* wblock = wpk + (long)(g * KB + kb) * CIN_PG * KH * KW * OCB;

    for (int ic = 0; ic < CIN_PG; ++ic) {
        __global const real* plane = in + ((long)n * C_IN + IN_CHANNEL(g, ic)) * H * W;
        for (int ky = 0; ky < KH; ++ky) {
            const int iy = iy0 + ky * DH;
            if (iy < 0 || iy >= H) continue;
            __global const real* row = plane + iy * W;
            __global const real* wtap = wblock + ((ic * KH + ky) * KW) * OCB;
            for (int kx = 0; kx < KW; ++kx) {
                const real4 x = load_columns(row, ix0 + kx * DW);
                for (int o = 0; o < OCB; ++o) acc[o] = mad((real4)(wtap[kx * OCB + o]), x, acc[o]);
            }
        }
    }

    for (int o = 0; o < OCB; ++o) {
        const int k_local = kb * OCB + o;
        if (k_local >= KOUT_PG) break;
        const int k = g * KOUT_PG + k_local;
        __global real* dst = out + (((long)n * K + k) * OH + oy) * OW;
        real values[4];
        vstore4(acc[o], 0, values);
        for (int j = 0; j < 4; ++j) {
            if (ox0 + j < OW) dst[ox0 + j] = epilogue(values[j], bias, k);
        }
    }
}
