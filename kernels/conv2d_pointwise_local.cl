// 1x1 (pointwise) convolution with stride 1 and no padding as a GEMM tiled in local memory,
// for GPUs: out[n, g*KOUT_PG + k, p] = sum_c w[g*KOUT_PG + k, c] * in[n, g*CIN_PG + c, p].
//
// in   [N, C_IN, P]              P = H * W
// wt   [GROUPS][CIN_PG][KOUT_PG]  weight [K, CIN_PG, 1, 1] transposed per group, so that a
//                                 work-group's output channels are adjacent in memory
// out  [N, K, P]
//
// A work-group of LS x LS work-items computes a (LS * WPT) x (LS * WPT) tile of output channels
// x positions. For each chunk of TC input channels it stages TC x TILE values of the input and
// of the weight in local memory, then every work-item accumulates its WPT x WPT outputs from
// there. Work-items own outputs at a stride of LS (not adjacent blocks), so neighbouring
// work-items read neighbouring local-memory words.
//
// Work decomposition: local size (LS, LS); global size (ceil(P / TILE) * LS,
// N * GROUPS * ceil(KOUT_PG / TILE) * LS).
//
// Build options: N, C_IN, K, P, GROUPS, CIN_PG, KOUT_PG, LS, WPT, TC; TILE = LS * WPT, and
// LS * LS must divide TC * TILE so the staging loads split evenly.

#define TILE (LS * WPT)
#define KT ((KOUT_PG + TILE - 1) / TILE)
#define LOADS (TC * TILE / (LS * LS))

__kernel __attribute__((reqd_work_group_size(LS, LS, 1))) void conv2d_pointwise_local(
    __global const real* restrict in,
    __global const real* restrict wt,
    __global const real* restrict bias,
    __global real* restrict out) {
    const int lp = get_local_id(0);
    const int lk = get_local_id(1);
    const int p0 = get_group_id(0) * TILE;
    const int block = get_group_id(1);
    const int k0 = (block % KT) * TILE;
    const int g = (block / KT) % GROUPS;
    const int n = block / (KT * GROUPS);

    __local real xs[TC][TILE];
    __local real ws[TC][TILE];
    real acc[WPT][WPT];
    for (int i = 0; i < WPT; ++i) {
        for (int j = 0; j < WPT; ++j) acc[i][j] = (real)0;
    }

    __global const real* src = in + ((long)n * C_IN + g * CIN_PG) * P;
    __global const real* wsrc = wt + (long)g * CIN_PG * KOUT_PG;
    const int flat = lk * LS + lp;
    for (int c0 = 0; c0 < CIN_PG; c0 += TC) {
        for (int i = 0; i < LOADS; ++i) {
            const int index = flat + i * LS * LS;
            const int cc = index / TILE;
            const int column = index % TILE;
            const int c = c0 + cc;
            const bool c_inside = c < CIN_PG;
            const int p = p0 + column;
            xs[cc][column] = (c_inside && p < P) ? src[(long)c * P + p] : (real)0;
            const int k = k0 + column;
            ws[cc][column] = (c_inside && k < KOUT_PG) ? wsrc[(long)c * KOUT_PG + k] : (real)0;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int cc = 0; cc < TC; ++cc) {
            real x[WPT];
            real w[WPT];
            for (int j = 0; j < WPT; ++j) x[j] = xs[cc][lp + j * LS];
            for (int i = 0; i < WPT; ++i) w[i] = ws[cc][lk + i * LS];
            for (int i = 0; i < WPT; ++i) {
                for (int j = 0; j < WPT; ++j) acc[i][j] = mad(w[i], x[j], acc[i][j]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (int i = 0; i < WPT; ++i) {
        const int k_local = k0 + lk + i * LS;
        if (k_local >= KOUT_PG) continue;
        const int k = g * KOUT_PG + k_local;
        __global real* dst = out + ((long)n * K + k) * P;
        for (int j = 0; j < WPT; ++j) {
            const int p = p0 + lp + j * LS;
            if (p < P) dst[p] = epilogue(acc[i][j], bias, k);
        }
    }
}
