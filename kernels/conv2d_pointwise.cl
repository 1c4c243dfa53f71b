// 1x1 (pointwise) convolution with stride 1 and no padding, as a tiled GEMM per image and group:
// out[n, g*KOUT_PG + k, p] = sum_c w[g*KOUT_PG + k, c] * in[n, g*CIN_PG + c, p], p = y*W + x.
//
// in   [N, C_IN, P]            P = H * W (a 1x1 stride-1 convolution keeps H and W)
// wpk  [GROUPS][KB][CIN_PG][OCB] weight [K, CIN_PG, 1, 1] repacked so that one block's OCB
//                              output channels are adjacent; channels past KOUT_PG are zero
// out  [N, K, P]
//
// Work decomposition: a work-item computes an OCB x (8 * PV) tile (OCB output channels, 8 * PV
// adjacent positions) with OCB * PV float8 (or double8) accumulators. Global size:
// (ceil(P / (8 * PV)), N * GROUPS * KB).
//
// Build options: N, C_IN, K, P, GROUPS, CIN_PG, KOUT_PG, OCB, KB, PV.

inline real8 load_positions(__global const real* row, int p0) {
    if (p0 + 8 <= P) return vload_real8(0, row + p0);
    real values[8];
    for (int j = 0; j < 8; ++j) values[j] = (p0 + j < P) ? row[p0 + j] : (real)0;
    return vload_real8(0, values);
}

__kernel void conv2d_pointwise(__global const real* restrict in,
                               __global const real* restrict wpk,
                               __global const real* restrict bias,
                               __global real* restrict out) {
    const int p0 = get_global_id(0) * 8 * PV;
    const int block = get_global_id(1);
    const int kb = block % KB;
    const int g = (block / KB) % GROUPS;
    const int n = block / (KB * GROUPS);

    real8 acc[OCB][PV];
    for (int o = 0; o < OCB; ++o) {
        for (int v = 0; v < PV; ++v) acc[o][v] = (real8)(0);
    }

    __global const real* src = in + ((long)n * C_IN + g * CIN_PG) * P;
    __global const real* wblock = wpk + (long)(g * KB + kb) * CIN_PG * OCB;
    for (int c = 0; c < CIN_PG; ++c) {
        real8 x[PV];
        for (int v = 0; v < PV; ++v) x[v] = load_positions(src + (long)c * P, p0 + 8 * v);
        for (int o = 0; o < OCB; ++o) {
            const real8 w = (real8)(wblock[c * OCB + o]);
            for (int v = 0; v < PV; ++v) acc[o][v] = mad(w, x[v], acc[o][v]);
        }
    }

    for (int o = 0; o < OCB; ++o) {
        const int k_local = kb * OCB + o;
        if (k_local >= KOUT_PG) break;
        const int k = g * KOUT_PG + k_local;
        __global real* dst = out + ((long)n * K + k) * P;
        for (int v = 0; v < PV; ++v) {
            const int p = p0 + 8 * v;
            if (p + 8 <= P) {
                vstore8(epilogue_real8(acc[o][v], bias, k), 0, dst + p);
                continue;
            }
            real values[8];
            vstore8(acc[o][v], 0, values);
            for (int j = 0; p + j < P && j < 8; ++j) dst[p + j] = epilogue(values[j], bias, k);
        }
    }
}
