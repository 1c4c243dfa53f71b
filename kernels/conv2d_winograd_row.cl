// Winograd F(M x M, 3 x 3) input and output transforms for DW == 1, four tiles of one tile
// row per work-item in real4 lanes (lane j is tile tx0 + j); conv2d_winograd.cl explains the
// method, the layouts of V and Mt and the tile numbering, and holds the per-tile transforms that
// serve any dilation. The input rows that four tiles read are 4 * M + 2 adjacent values, loaded
// as one run; the output rows they write are 4 * M adjacent values, stored as one run.
//
// Work decomposition: global size (ceil(TW / 4), DH * TH, C or K times N).
//
// Build options: as conv2d_winograd.cl.

#define TILE_SPAN (4 * WINO_M + 2)

#ifndef WINO_OUTPUT
__kernel void winograd_input_row(__global const real* restrict in, __global real* restrict v) {
    const int tx0 = get_global_id(0) * 4;
    const int row = get_global_id(1);
    const int c = get_global_id(2) % C_IN;
    const int n = get_global_id(2) / C_IN;
    const real bt[WINO_A][WINO_A] = {BT_ROWS};

    const int ty = row % TH;
    const int py = row / TH;
    const int iy0 = py + DH * ty * WINO_M - PAD_TOP;
    const int ix0 = tx0 * WINO_M - PAD_LEFT;
    __global const real* plane = in + ((long)n * C_IN + c) * H * W;
    const bool columns_inside = ix0 >= 0 && ix0 + TILE_SPAN <= W;

    real4 d[WINO_A][WINO_A];
#pragma unroll
    for (int a = 0; a < WINO_A; ++a) {
        const int iy = iy0 + a * DH;
        const bool row_inside = iy >= 0 && iy < H;
        __global const real* src = plane + (row_inside ? iy : 0) * W + ix0;
        real span[TILE_SPAN];
        if (row_inside && columns_inside) {
#pragma unroll
            for (int i = 0; i < TILE_SPAN; ++i) span[i] = src[i];
        } else {
#pragma unroll
            for (int i = 0; i < TILE_SPAN; ++i) {
                const int ix = ix0 + i;
                span[i] = (row_inside && ix >= 0 && ix < W) ? src[i] : (real)0;
            }
        }
#pragma unroll
        for (int b = 0; b < WINO_A; ++b) {
            d[a][b] = (real4)(span[b], span[WINO_M + b], span[2 * WINO_M + b],
                              span[3 * WINO_M + b]);
        }
    }

    real4 tmp[WINO_A][WINO_A];
#pragma unroll
    for (int i = 0; i < WINO_A; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            real4 sum = (real4)(0);
#pragma unroll
            for (int a = 0; a < WINO_A; ++a) sum += bt[i][a] * d[a][j];
            tmp[i][j] = sum;
        }
    }
    const int lanes = min(4, TW - tx0);
    __global real* dst = v + ((long)n * WINO_A * WINO_A * C_IN + c) * TILES + row * TW + tx0;
#pragma unroll
    for (int i = 0; i < WINO_A; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            real4 sum = (real4)(0);
#pragma unroll
            for (int b = 0; b < WINO_A; ++b) sum += tmp[i][b] * bt[j][b];
            __global real* plane_dst = dst + (long)(i * WINO_A + j) * C_IN * TILES;
            if (lanes == 4) {
                vstore4(sum, 0, plane_dst);
            } else {
                real values[4];
                vstore4(sum, 0, values);
                for (int lane = 0; lane < lanes; ++lane) plane_dst[lane] = values[lane];
            }
        }
    }
}
#endif

#ifdef WINO_OUTPUT
__kernel void winograd_output_row(__global const real* restrict m,
                                  __global const real* restrict bias,
                                  __global real* restrict out) {
    const int tx0 = get_global_id(0) * 4;
    const int row = get_global_id(1);
    const int k = get_global_id(2) % K;
    const int n = get_global_id(2) / K;
    const real at[WINO_M][WINO_A] = {AT_ROWS};

    const int lanes = min(4, TW - tx0);
    __global const real* src = m + ((long)n * WINO_A * WINO_A * K + k) * TILES + row * TW + tx0;
    real4 x[WINO_A][WINO_A];
#pragma unroll
    for (int i = 0; i < WINO_A; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            __global const real* plane_src = src + (long)(i * WINO_A + j) * K * TILES;
            if (lanes == 4) {
                x[i][j] = vload4(0, plane_src);
            } else {
                real values[4] = {0, 0, 0, 0};
                for (int lane = 0; lane < lanes; ++lane) values[lane] = plane_src[lane];
                x[i][j] = vload4(0, values);
            }
        }
    }

    real4 tmp[WINO_M][WINO_A];
#pragma unroll
    for (int i = 0; i < WINO_M; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            real4 sum = (real4)(0);
#pragma unroll
            for (int a = 0; a < WINO_A; ++a) sum += at[i][a] * x[a][j];
            tmp[i][j] = sum;
        }
    }

    const int ty = row % TH;
    const int py = row / TH;
    const int oy0 = py + DH * ty * WINO_M;
    const int ox0 = tx0 * WINO_M;
    __global real* plane = out + ((long)n * K + k) * OH * OW;
#pragma unroll
    for (int i = 0; i < WINO_M; ++i) {
        const int oy = oy0 + i * DH;
        if (oy >= OH) break;
        // span[lane * M + jj] is output column ox0 + lane * M + jj of this row.
        real span[4 * WINO_M];
#pragma unroll
        for (int jj = 0; jj < WINO_M; ++jj) {
            real4 sum = (real4)(0);
#pragma unroll
            for (int b = 0; b < WINO_A; ++b) sum += tmp[i][b] * at[jj][b];
            span[jj] = sum.s0;
            span[WINO_M + jj] = sum.s1;
            span[2 * WINO_M + jj] = sum.s2;
            span[3 * WINO_M + jj] = sum.s3;
        }
        __global real* dst = plane + oy * OW + ox0;
        if (ox0 + 4 * WINO_M <= OW) {
#pragma unroll
            for (int e = 0; e < 4 * WINO_M; ++e) dst[e] = epilogue(span[e], bias, k);
        } else {
            for (int e = 0; e < OW - ox0; ++e) dst[e] = epilogue(span[e], bias, k);
        }
    }
}
#endif
