// Transposed 2-D convolution as a gather over the taps of each output phase (no atomics, no
// zero insertion), register-blocked as 8 output columns x 8 output channels.
//
// in   [N, C_IN, H, W]
// wpk  [GROUPS][KB][CIN_PG][KH][KW][8]  weight [C_IN, KOUT_PG, KH, KW] repacked so that one
//                                      block's 8 output channels are adjacent; channels past
//                                      KOUT_PG are zero
// out  [N, K, OH, OW]                  K = GROUPS * KOUT_PG
//
// out[n, g*KOUT_PG + k, oy, ox] = sum over ic, ky, kx with oy + PAD_TOP - ky*DH = iy*SH and
//   ox + PAD_LEFT - kx*DW = ix*SW (0 <= iy < H, 0 <= ix < W) of
//   in[n, g*CIN_PG + ic, iy, ix] * w[g*CIN_PG + ic, k, ky, kx].
// OH and OW already include output_padding and the bottom/right pads.
//
// Phases: write ox = q*SW + px. Whether tap kx contributes depends on px alone, and then
// ix = q + (px + PAD_LEFT - kx*DW) / SW, so the columns q0 .. q0+7 of one phase read 8 adjacent
// input columns. Valid taps on an axis form an arithmetic progression with step
// STEP_X = SW / gcd(SW, DW) (STEP_Y likewise), so each work-item finds the first one and steps
// over valid taps only.
//
// Work decomposition: a work-item computes 8 output columns of one phase (ox = (q0 + j)*SW + px)
// x 8 output channels of one output row, in eight float8 (or double8) accumulators: one weight
// vector load per tap and input channel, one broadcast per input value. Global size:
// (SW * ceil(QW / 8), OH, N * GROUPS * KB) with QW = ceil(OW / SW).
//
// Build options: N, C_IN, H, W, K, OH, OW, KH, KW, SH, SW, DH, DW, PAD_TOP, PAD_LEFT, GROUPS,
// CIN_PG, KOUT_PG, KB, QW, QB = ceil(QW / 8), STEP_X, STEP_Y.

__kernel void conv_transpose2d_gather(__global const real* restrict in,
                                      __global const real* restrict wpk,
                                      __global const real* restrict bias,
                                      __global real* restrict out) {
    const int px = get_global_id(0) / QB;
    const int q0 = (get_global_id(0) % QB) * 8;
    const int oy = get_global_id(1);
    const int block = get_global_id(2);
    const int kb = block % KB;
    const int g = (block / KB) % GROUPS;
    const int n = block / (KB * GROUPS);

    // First contributing tap on each axis, or KH / KW when there is none. For x the test uses
    // the phase alone, because every column of the tile shares it.
    int ky0 = KH;
    for (int ky = 0; ky < STEP_Y && ky < KH; ++ky) {
        const int ty = oy + PAD_TOP - ky * DH;
        if (ty >= 0 && ty % SH == 0) { ky0 = ky; break; }
    }
    int kx0 = KW;
    for (int kx = 0; kx < STEP_X && kx < KW; ++kx) {
        const int tx = px + PAD_LEFT - kx * DW;
        if (((tx % SW) + SW) % SW == 0) { kx0 = kx; break; }
    }

    real8 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = (real8)(0);

    __global const real* src = in + ((long)n * C_IN + g * CIN_PG) * H * W;
    __global const real* wblock = wpk + (long)(g * KB + kb) * CIN_PG * KH * KW * 8;
    for (int ky = ky0; ky < KH; ky += STEP_Y) {
        const int ty = oy + PAD_TOP - ky * DH;
        if (ty < 0) break;
        const int iy = ty / SH;
        if (iy >= H) continue;
        for (int kx = kx0; kx < KW; kx += STEP_X) {
            // Exact division: px + PAD_LEFT - kx*DW is a multiple of SW for a valid tap.
            const int ix0 = q0 + (px + PAD_LEFT - kx * DW) / SW;
            if (ix0 + 7 < 0) break;
            if (ix0 >= W) continue;
            const bool interior = ix0 >= 0 && ix0 + 7 < W;
            __global const real* row = src + iy * W + ix0;
            __global const real* wtap = wblock + (ky * KW + kx) * 8;
            for (int ic = 0; ic < CIN_PG; ++ic) {
                const real8 w = vload_real8(0, wtap + ic * KH * KW * 8);
                __global const real* channel_row = row + (long)ic * H * W;
                for (int j = 0; j < 8; ++j) {
                    const bool inside = interior || (ix0 + j >= 0 && ix0 + j < W);
                    const real x = inside ? channel_row[j] : (real)0;
                    acc[j] = mad((real8)(x), w, acc[j]);
                }
            }
        }
    }

    for (int o = 0; o < 8; ++o) {
        const int k_local = kb * 8 + o;
        if (k_local >= KOUT_PG) break;
        const int k = g * KOUT_PG + k_local;
        __global real* dst = out + (((long)n * K + k) * OH + oy) * OW;
        for (int j = 0; j < 8; ++j) {
            const int ox = (q0 + j) * SW + px;
            real values[8];
            vstore8(acc[j], 0, values);
            if (ox < OW) dst[ox] = epilogue(values[o], bias, k);
        }
    }
}
