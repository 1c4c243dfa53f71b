// Direct 2-D convolution vectorised over output channels, for runtimes that pack adjacent
// work-items of dimension 0 into SIMD lanes (Intel's CPU runtime, GPUs). Adjacent work-items
// compute adjacent output channels, so each weight load is contiguous across lanes and each
// input load is the same address in every lane (a broadcast).
//
// in   [N, C_IN, HP, WP]              input already padded on every side, so no tap needs a
//                                     bounds check
// wt   [GROUPS][CIN_PG][KH][KW][KPAD] weight [K, CIN_PG, KH, KW] with the output channel of
//                                     the group innermost, zero past KOUT_PG
// out  [N, K, OH, OW]                 K = GROUPS * KOUT_PG
//
// out[n, g*KOUT_PG + k, oy, ox] = sum_{ic, ky, kx} in[n, IN_CHANNEL(g, ic), oy*SH + ky*DH,
//                                                  ox*SW + kx*DW] * w[g*KOUT_PG + k, ic, ky, kx]
//
// Work decomposition: a work-item computes OWB adjacent output columns of one output row for
// one output channel, in OWB scalar accumulators (one SIMD register each once the runtime
// vectorises across work-items; OWB = 8 fits AVX2's 16 registers). Global size:
// (KPAD, ceil(OW / OWB), OH * N * GROUPS), KPAD = KOUT_PG rounded up to 16. Columns past OW
// are computed from a clamped column and not stored, so loads stay in bounds.
//
// Build options: N, C_IN, HP, WP, K, OH, OW, KH, KW, SH, SW, DH, DW, GROUPS, CIN_PG, KOUT_PG,
// KPAD, OWB, and optionally CHANNEL_MAP_KG, CHANNEL_MAP_CG (see conv2d_direct.cl).

#ifdef CHANNEL_MAP_KG
#define IN_CHANNEL(g, ic) \
    ((((g) / CHANNEL_MAP_KG) * CHANNEL_MAP_CG + (ic)) * CHANNEL_MAP_KG + (g) % CHANNEL_MAP_KG)
#else
#define IN_CHANNEL(g, ic) ((g) * CIN_PG + (ic))
#endif

__kernel void conv2d_direct_oc(__global const real* restrict in,
                               __global const real* restrict wt,
                               __global const real* restrict bias,
                               __global real* restrict out) {
    const int k_local = get_global_id(0);
    const int ox0 = get_global_id(1) * OWB;
    const int oy = get_global_id(2) % OH;
    const int g = (get_global_id(2) / OH) % GROUPS;
    const int n = get_global_id(2) / (OH * GROUPS);

    real acc[OWB];
    for (int j = 0; j < OWB; ++j) acc[j] = (real)0;

    for (int ic = 0; ic < CIN_PG; ++ic) {
        __global const real* plane =
            in + (((long)n * C_IN + IN_CHANNEL(g, ic)) * HP + oy * SH) * WP;
        __global const real* wtap = wt + ((long)(g * CIN_PG + ic) * KH * KW) * KPAD + k_local;
        for (int ky = 0; ky < KH; ++ky) {
            for (int kx = 0; kx < KW; ++kx) {
                const real w = wtap[(ky * KW + kx) * KPAD];
                __global const real* row = plane + ky * DH * WP + kx * DW;
                for (int j = 0; j < OWB; ++j) {
                    acc[j] = mad(w, row[min(ox0 + j, OW - 1) * SW], acc[j]);
                }
            }
        }
    }

    if (k_local >= KOUT_PG) return;
    const int k = g * KOUT_PG + k_local;
    __global real* dst = out + (((long)n * K + k) * OH + oy) * OW;
    for (int j = 0; j < OWB; ++j) {
        if (ox0 + j < OW) dst[ox0 + j] = epilogue(acc[j], bias, k);
    }
}
