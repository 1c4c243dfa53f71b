// Depthwise convolution: groups = C_IN, one input channel per group, depth multiplier MULT.
// out[n, k, oy, ox] = sum_{ky, kx} in[n, k / MULT, iy, ix] * w[k, 0, ky, kx]
//   with iy = oy*SH - PAD_TOP + ky*DH and ix = ox*SW - PAD_LEFT + kx*DW (zero outside).
//
// in [N, C_IN, H, W], w [K, 1, KH, KW] with K = C_IN * MULT, out [N, K, OH, OW].
//
// Work decomposition: a work-item computes a tile of RB output rows by VW adjacent output
// columns of one channel, each output row as a vector of VW values, with the KH*KW taps in
// private memory. Global size: (ceil(OW / VW), ceil(OH / RB), N * K).
//   - Interior tiles (every input column the tile reads lies in [0, W)) load without bounds
//     checks, as one vector per tap when SW = 1.
//     With SH = DH = 1 and all RB rows inside the output, each input row is loaded once as KW
//     shifted vectors and added into the up to KH output rows that read it.
//   - Edge tiles with SW = 1 load a whole vector and zero the lanes outside [0, W) with a lane
//     mask. With SW > 1, or where that vector would reach past either end of the input buffer,
//     they load lane by lane.
//
// Build options: N, C_IN, H, W, K, OH, OW, KH, KW, SH, SW, DH, DW, PAD_TOP, PAD_LEFT, MULT,
//   VW (output columns per vector, 4 or 8) and RB (output rows per work-item, 1 or more).

#if VW == 4
#define realv real4
#define VLOAD(p) vload4(0, p)
#define VSTORE(v, p) vstore4(v, 0, p)
#elif VW == 8
#define realv real8
#define VLOAD(p) vload8(0, p)
#define VSTORE(v, p) vstore8(v, 0, p)
#else
#error "VW must be 4 or 8"
#endif

// Integer vector with lanes as wide as real's, as select() and vector comparisons require.
#if USE_DOUBLE
#define INDEX_VECTOR(n) long##n
#else
#define INDEX_VECTOR(n) int##n
#endif
#if VW == 4
#define indexv INDEX_VECTOR(4)
#define LANE_OFFSETS ((indexv)(0, 1, 2, 3))
#else
#define indexv INDEX_VECTOR(8)
#define LANE_OFFSETS ((indexv)(0, 1, 2, 3, 4, 5, 6, 7))
#endif

// Input columns a tile's row reads, from its first column ix0 to ix0 + SPAN.
#define SPAN ((VW - 1) * SW + (KW - 1) * DW)
#define INPUT_ELEMENTS ((long)N * C_IN * H * W)

// Columns ix, ix + SW, ..., ix + (VW - 1) * SW of an input row, all inside [0, W).
inline realv load_inside(__global const real* row, int ix) {
#if SW == 1
    return VLOAD(row + ix);
#else
    real values[VW];
    for (int j = 0; j < VW; ++j) values[j] = row[ix + j * SW];
    return VLOAD(values);
#endif
}

// Columns ix, ix + SW, ... of the input row that starts at element `row_start` of `in`, with
// zero for columns outside [0, W). With SW = 1 and the vector inside the buffer, the lanes
// outside the row read neighbouring rows and are then zeroed.
inline realv load_edge(__global const real* in, long row_start, int ix) {
#if SW == 1
    if (row_start + ix >= 0 && row_start + ix + VW <= INPUT_ELEMENTS) {
        const indexv column = LANE_OFFSETS + (indexv)(ix);
        const indexv in_row = column >= (indexv)(0) && column < (indexv)(W);
        return select((realv)(0), VLOAD(in + row_start + ix), in_row);
    }
#endif
    real values[VW];
    for (int j = 0; j < VW; ++j) {
        const int column = ix + j * SW;
        values[j] = (column >= 0 && column < W) ? in[row_start + column] : (real)0;
    }
    return VLOAD(values);
}

#define epilogue_vector CONCAT_EPILOGUE(realv)

__kernel void conv2d_depthwise(__global const real* restrict in,
                               __global const real* restrict w,
                               __global const real* restrict bias,
                               __global real* restrict out) {
    const int ox0 = get_global_id(0) * VW;
    const int oy0 = get_global_id(1) * RB;
    const int plane = get_global_id(2);
    const int k = plane % K;
    const int n = plane / K;

    real taps[KH * KW];
#pragma unroll
    for (int t = 0; t < KH * KW; ++t) taps[t] = w[k * KH * KW + t];

    const long src = ((long)n * C_IN + k / MULT) * H * W;
    __global real* dst = out + ((long)n * K + k) * OH * OW;
    const int ix0 = ox0 * SW - PAD_LEFT;
    const bool full_width = ox0 + VW <= OW;
    const bool inside = ix0 >= 0 && ix0 + SPAN < W && full_width;

#if SH == 1 && DH == 1
    if (inside && oy0 + RB <= OH) {
        // Input row oy0 - PAD_TOP + r feeds output rows oy0 + r - ky for ky in [0, KH). The
        // loops are unrolled, so acc[] and the row's KW vectors stay in registers.
        realv acc[RB];
#pragma unroll
        for (int j = 0; j < RB; ++j) acc[j] = (realv)(0);
#pragma unroll
        for (int r = 0; r < RB + KH - 1; ++r) {
            const int iy = oy0 - PAD_TOP + r;
            if (iy < 0 || iy >= H) continue;
            __global const real* row = in + src + iy * W + ix0;
            realv x[KW];
#pragma unroll
            for (int kx = 0; kx < KW; ++kx) x[kx] = load_inside(row, kx * DW);
#pragma unroll
            for (int ky = 0; ky < KH; ++ky) {
                const int j = r - ky;
                if (j < 0 || j >= RB) continue;
#pragma unroll
                for (int kx = 0; kx < KW; ++kx) {
                    acc[j] = mad((realv)(taps[ky * KW + kx]), x[kx], acc[j]);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < RB; ++j) {
            VSTORE(epilogue_vector(acc[j], bias, k), dst + (oy0 + j) * OW + ox0);
        }
        return;
    }
#endif

    const int oy_end = min(oy0 + RB, OH);
    for (int oy = oy0; oy < oy_end; ++oy) {
        const int iy0 = oy * SH - PAD_TOP;
        realv acc = (realv)(0);
        if (inside) {
#pragma unroll
            for (int ky = 0; ky < KH; ++ky) {
                const int iy = iy0 + ky * DH;
                if (iy < 0 || iy >= H) continue;
                __global const real* row = in + src + iy * W + ix0;
#pragma unroll
                for (int kx = 0; kx < KW; ++kx) {
                    acc = mad((realv)(taps[ky * KW + kx]), load_inside(row, kx * DW), acc);
                }
            }
        } else {
#pragma unroll
            for (int ky = 0; ky < KH; ++ky) {
                const int iy = iy0 + ky * DH;
                if (iy < 0 || iy >= H) continue;
                const long row_start = src + iy * W;
#pragma unroll
                for (int kx = 0; kx < KW; ++kx) {
                    acc = mad((realv)(taps[ky * KW + kx]), load_edge(in, row_start, ix0 + kx * DW),
                              acc);
                }
            }
        }

        __global real* dst_row = dst + oy * OW + ox0;
        if (full_width) {
            VSTORE(epilogue_vector(acc, bias, k), dst_row);
        } else {
            real values[VW];
            VSTORE(acc, values);
            for (int j = 0; j < VW && ox0 + j < OW; ++j) {
                dst_row[j] = epilogue(values[j], bias, k);
            }
        }
    }
}
