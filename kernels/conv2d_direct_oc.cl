// Direct 2-D convolution vectorised over output channels: each work-item keeps a tile of
// OWB output columns x 8 output channels in OWB float8 (or double8) registers.
//
// in   [N, C_IN, HP, WP]                 input already padded on every side, so no tap needs
//                                        a bounds check
// wpk  [GROUPS][KB][CIN_PG][KH][KW][8]   weight [K, CIN_PG, KH, KW] repacked so that one
//                                        block's 8 output channels are adjacent; channels past
//                                        KOUT_PG are zero
// out  [N, K, OH, OW]                    K = GROUPS * KOUT_PG
//
// out[n, g*KOUT_PG + k, oy, ox] = sum_{ic, ky, kx} in[n, IN_CHANNEL(g, ic), oy*SH + ky*DH,
//                                                  ox*SW + kx*DW] * w[g*KOUT_PG + k, ic, ky, kx]
//
// Per tap, one vector load brings the weights of 8 output channels, and each of the OWB input
// values is broadcast into a fused multiply-add with them: the register blocking oneDNN uses on
// AVX2, written with OpenCL vector types so that runtimes which do not vectorise across
// work-items (PoCL) still emit SIMD code. OWB = 8 keeps 8 accumulators plus operands within
// AVX2's 16 vector registers.
//
// Work decomposition: global size (ceil(OW / OWB), OH, N * GROUPS * KB). Columns past OW are
// computed from a clamped column and not stored, so loads stay in bounds.
//
// Build options: N, C_IN, HP, WP, K, OH, OW, KH, KW, SH, SW, DH, DW, GROUPS, CIN_PG, KOUT_PG,
// KB = ceil(KOUT_PG / 8), OWB, and optionally CHANNEL_MAP_KG, CHANNEL_MAP_CG (see IN_CHANNEL in
// common.cl).
//
// Transposed convolution by output phase (conv_transpose2d_phases): with PHASE_SH, PHASE_SW,
// T_KOUT_PG, T_OH, T_OW, T_PAD_TOP and T_PAD_LEFT set, the KOUT_PG = PHASE_SH * PHASE_SW *
// T_KOUT_PG output channels of a group are the phases of T_KOUT_PG channels of a transposed
// convolution (weights stacked by the host), and each value goes straight to its place in that
// convolution's [N, GROUPS * T_KOUT_PG, T_OH, T_OW] output, cropped by its padding, with the
// bias and activation of that output channel.

__kernel void conv2d_direct_oc(__global const real* restrict in,
                               __global const real* restrict wpk,
                               __global const real* restrict bias,
                               __global real* restrict out) {
    const int ox0 = get_global_id(0) * OWB;
    const int oy = get_global_id(1);
    const int block = get_global_id(2);
    const int kb = block % KB;
    const int g = (block / KB) % GROUPS;
    const int n = block / (KB * GROUPS);

    // Input offsets of the tile's columns, clamped to the last real output column.
    int column[OWB];
    for (int j = 0; j < OWB; ++j) column[j] = min(ox0 + j, OW - 1) * SW;

    real8 acc[OWB];
    for (int j = 0; j < OWB; ++j) acc[j] = (real8)(0);

    __global const real* wblock = wpk + (long)(g * KB + kb) * CIN_PG * KH * KW * 8;
    for (int ic = 0; ic < CIN_PG; ++ic) {
        __global const real* plane =
            in + (((long)n * C_IN + IN_CHANNEL(g, ic)) * HP + oy * SH) * WP;
        __global const real* wtap = wblock + ic * KH * KW * 8;
        for (int ky = 0; ky < KH; ++ky) {
            for (int kx = 0; kx < KW; ++kx) {
                const real8 w = vload_real8(0, wtap + (ky * KW + kx) * 8);
                __global const real* row = plane + ky * DH * WP + kx * DW;
                for (int j = 0; j < OWB; ++j) acc[j] = mad((real8)(row[column[j]]), w, acc[j]);
            }
        }
    }

    for (int o = 0; o < 8; ++o) {
        const int k_local = kb * 8 + o;
        if (k_local >= KOUT_PG) break;
#ifdef PHASE_SH
        // Output channel k_local = (ry * PHASE_SW + rx) * T_KOUT_PG + t of this group is phase
        // (ry, rx) of channel t of a transposed convolution: write it in place, cropped.
        const int t = k_local % T_KOUT_PG;
        const int phase = k_local / T_KOUT_PG;
        const int k = g * T_KOUT_PG + t;
        const int fy = oy * PHASE_SH + phase / PHASE_SW - T_PAD_TOP;
        if (fy < 0 || fy >= T_OH) continue;
        __global real* dst = out + (((long)n * GROUPS * T_KOUT_PG + k) * T_OH + fy) * T_OW;
        for (int j = 0; j < OWB; ++j) {
            real values[8];
            vstore8(acc[j], 0, values);
            const int fx = (ox0 + j) * PHASE_SW + phase % PHASE_SW - T_PAD_LEFT;
            if (ox0 + j < OW && fx >= 0 && fx < T_OW) dst[fx] = epilogue(values[o], bias, k);
        }
#else
        const int k = g * KOUT_PG + k_local;
        __global real* dst = out + (((long)n * K + k) * OH + oy) * OW;
        for (int j = 0; j < OWB; ++j) {
            real values[8];
            vstore8(acc[j], 0, values);
            if (ox0 + j < OW) dst[ox0 + j] = epilogue(values[o], bias, k);
        }
#endif
    }
}
