// Transposed 2-D convolution as a gather over the taps of each output phase (no atomics, no
// zero insertion).
//
// in   [N, C_IN, H, W]
// wpk  [GROUPS][KB][CIN_PG][KH][KW][OCB]  weight [C_IN, KOUT_PG, KH, KW] repacked so that one
//                                        block's OCB output channels are adjacent; channels
//                                        past KOUT_PG are zero
// out  [N, K, OH, OW]                    K = GROUPS * KOUT_PG
//
// out[n, g*KOUT_PG + k, oy, ox] = sum over ic, ky, kx with oy + PAD_TOP - ky*DH = iy*SH and
//   ox + PAD_LEFT - kx*DW = ix*SW (0 <= iy < H, 0 <= ix < W) of
//   in[n, g*CIN_PG + ic, iy, ix] * w[g*CIN_PG + ic, k, ky, kx].
// OH and OW already include output_padding and the bottom/right pads.
//
// Phases: only taps with (ox + PAD_LEFT - kx*DW) divisible by SW contribute. Those kx form an
// arithmetic progression with step STEP_X = SW / gcd(SW, DW), so each work-item finds the first
// one and then steps over valid taps only (likewise for y). Dimension 0 enumerates output
// columns phase by phase (all columns with ox % SW == 0, then ox % SW == 1, ...), so adjacent
// work-items share their tap pattern and read adjacent input columns.
//
// Work decomposition: a work-item computes OCB output channels of one output pixel. Global
// size: (SW * QW, OH, N * GROUPS * KB) with QW = ceil(OW / SW); items past OW store nothing.
//
// Build options: N, C_IN, H, W, K, OH, OW, KH, KW, SH, SW, DH, DW, PAD_TOP, PAD_LEFT, GROUPS,
// CIN_PG, KOUT_PG, OCB, KB, QW, STEP_X, STEP_Y.

__kernel void conv_transpose2d_gather(__global const real* restrict in,
                                      __global const real* restrict wpk,
                                      __global const real* restrict bias,
                                      __global real* restrict out) {
    const int phase_x = get_global_id(0) / QW;
    const int ox = (get_global_id(0) % QW) * SW + phase_x;
    const int oy = get_global_id(1);
    const int block = get_global_id(2);
    const int kb = block % KB;
    const int g = (block / KB) % GROUPS;
    const int n = block / (KB * GROUPS);
    if (ox >= OW) return;

    // First contributing tap on each axis, or KH / KW when there is none.
    int ky0 = KH;
    for (int ky = 0; ky < STEP_Y && ky < KH; ++ky) {
        const int ty = oy + PAD_TOP - ky * DH;
        if (ty >= 0 && ty % SH == 0) { ky0 = ky; break; }
    }
    int kx0 = KW;
    for (int kx = 0; kx < STEP_X && kx < KW; ++kx) {
        const int tx = ox + PAD_LEFT - kx * DW;
        if (tx >= 0 && tx % SW == 0) { kx0 = kx; break; }
    }

    real acc[OCB];
    for (int o = 0; o < OCB; ++o) acc[o] = (real)0;

    __global const real* src = in + ((long)n * C_IN + g * CIN_PG) * H * W;
    __global const real* wblock = wpk + (long)(g * KB + kb) * CIN_PG * KH * KW * OCB;
    for (int ky = ky0; ky < KH; ky += STEP_Y) {
        const int ty = oy + PAD_TOP - ky * DH;
        if (ty < 0) break;
        const int iy = ty / SH;
        if (iy >= H) continue;
        for (int kx = kx0; kx < KW; kx += STEP_X) {
            const int tx = ox + PAD_LEFT - kx * DW;
            if (tx < 0) break;
            const int ix = tx / SW;
            if (ix >= W) continue;
            __global const real* pixel = src + iy * W + ix;
            __global const real* wtap = wblock + (ky * KW + kx) * OCB;
            for (int ic = 0; ic < CIN_PG; ++ic) {
                const real x = pixel[(long)ic * H * W];
                for (int o = 0; o < OCB; ++o) {
                    acc[o] = mad(x, wtap[ic * KH * KW * OCB + o], acc[o]);
                }
            }
        }
    }

    for (int o = 0; o < OCB; ++o) {
        const int k_local = kb * OCB + o;
        if (k_local >= KOUT_PG) break;
        const int k = g * KOUT_PG + k_local;
        out[(((long)n * K + k) * OH + oy) * OW + ox] = epilogue(acc[o], bias, k);
    }
}
