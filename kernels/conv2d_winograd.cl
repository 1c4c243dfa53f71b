// Winograd F(M x M, 3 x 3) convolution, stride 1, in three launches:
//
//   winograd_input   V[n][xi][c][t] = (B^T d B)[xi]   d: the A x A input patch of tile t
//   (GEMM)           Mt[n][xi][k][t] = sum_c U[xi][k][c] * V[n][xi][c][t]
//                    conv2d_pointwise with A*A*GROUPS groups; U = G g G^T is computed on the
//                    host once per weight and cached
//   winograd_output  out[n][k][tile t] = A^T Mt[n][.][k][t] A, then bias and activation
//
// A = M + 2 is the transformed tile size, xi in [0, A*A) indexes the A x A transform domain.
// M = 2 (A = 4) or M = 4 (A = 6), with the interpolation points 0, 1, -1 (and 2, -2 for M = 4)
// used by Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2015).
//
// Dilation: a 3 x 3 convolution with dilation (DH, DW) splits into DH * DW undilated ones, one
// per output phase (py, px): the outputs oy = py + DH * u read the input rows
// py - PAD_TOP + DH * (u + ky). Tiles are therefore laid out per phase, on each phase's own
// grid of TH x TW tiles, and t = ((py * DW + px) * TH + ty) * TW + tx with TILES = DH*DW*TH*TW.
// Without dilation there is one phase.
//
// Padding is zero padding read as bounds checks in the input transform; outputs past OH or OW
// (the last tiles overhang) are computed and not stored.
//
// Work decomposition: winograd_input and winograd_output take one (tile, channel, image) per
// work-item, global size (TILES, C or K, N), so that work-items adjacent in dimension 0 touch
// adjacent tiles; they serve any dilation. winograd_input_row and winograd_output_row
// (conv2d_winograd_row.cl) serve DW == 1 with four tiles of a tile row per work-item. B^T and
// A^T are in common.cl.
//
// Build options: C_IN, H, W, K, OH, OW, PAD_TOP, PAD_LEFT, DH, DW, WINO_M, TH, TW, TILES, and
// WINO_OUTPUT for the output transform's program (each program compiles one kernel: the
// unrolled transforms take PoCL about 3 s each to compile).

// Position of tile t: its phase (py, px) and its first output (oy0, ox0) on the full grid,
// with (DH, DW) the distance between that phase's rows and columns.
inline void tile_origin(int t, int* oy0, int* ox0) {
    const int tx = t % TW;
    const int ty = (t / TW) % TH;
    const int phase = t / (TW * TH);
    const int px = phase % DW;
    const int py = phase / DW;
    *oy0 = py + DH * ty * WINO_M;
    *ox0 = px + DW * tx * WINO_M;
}

#ifndef WINO_OUTPUT
__kernel void winograd_input(__global const real* restrict in, __global real* restrict v) {
    const int t = get_global_id(0);
    const int c = get_global_id(1);
    const int n = get_global_id(2);
    const real bt[WINO_A][WINO_A] = {BT_ROWS};

    int oy0, ox0;
    tile_origin(t, &oy0, &ox0);
    const int iy0 = oy0 - PAD_TOP;
    const int ix0 = ox0 - PAD_LEFT;
    __global const real* plane = in + ((long)n * C_IN + c) * H * W;

    real d[WINO_A][WINO_A];
#pragma unroll
    for (int a = 0; a < WINO_A; ++a) {
        const int iy = iy0 + a * DH;
        const bool row_inside = iy >= 0 && iy < H;
#pragma unroll
        for (int b = 0; b < WINO_A; ++b) {
            const int ix = ix0 + b * DW;
            d[a][b] = (row_inside && ix >= 0 && ix < W) ? plane[iy * W + ix] : (real)0;
        }
    }

    // tmp = B^T d, then V = tmp B (B's columns are B^T's rows).
    real tmp[WINO_A][WINO_A];
#pragma unroll
    for (int i = 0; i < WINO_A; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            real sum = 0;
#pragma unroll
            for (int a = 0; a < WINO_A; ++a) sum += bt[i][a] * d[a][j];
            tmp[i][j] = sum;
        }
    }
    __global real* dst = v + ((long)n * WINO_A * WINO_A * C_IN + c) * TILES + t;
#pragma unroll
    for (int i = 0; i < WINO_A; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            real sum = 0;
#pragma unroll
            for (int b = 0; b < WINO_A; ++b) sum += tmp[i][b] * bt[j][b];
            dst[(long)(i * WINO_A + j) * C_IN * TILES] = sum;
        }
    }
}
#endif

#ifdef WINO_OUTPUT
__kernel void winograd_output(__global const real* restrict m,
                              __global const real* restrict bias,
                              __global real* restrict out) {
    const int t = get_global_id(0);
    const int k = get_global_id(1);
    const int n = get_global_id(2);
    const real at[WINO_M][WINO_A] = {AT_ROWS};

    __global const real* src = m + ((long)n * WINO_A * WINO_A * K + k) * TILES + t;
    real x[WINO_A][WINO_A];
#pragma unroll
    for (int i = 0; i < WINO_A; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) x[i][j] = src[(long)(i * WINO_A + j) * K * TILES];
    }

    // tmp = A^T x (M x A), then y = tmp A (M x M).
    real tmp[WINO_M][WINO_A];
#pragma unroll
    for (int i = 0; i < WINO_M; ++i) {
#pragma unroll
        for (int j = 0; j < WINO_A; ++j) {
            real sum = 0;
#pragma unroll
            for (int a = 0; a < WINO_A; ++a) sum += at[i][a] * x[a][j];
            tmp[i][j] = sum;
        }
    }

    int oy0, ox0;
    tile_origin(t, &oy0, &ox0);
    __global real* plane = out + ((long)n * K + k) * OH * OW;
#pragma unroll
    for (int i = 0; i < WINO_M; ++i) {
        const int oy = oy0 + i * DH;
#pragma unroll
        for (int j = 0; j < WINO_M; ++j) {
            const int ox = ox0 + j * DW;
            real sum = 0;
#pragma unroll
            for (int b = 0; b < WINO_A; ++b) sum += tmp[i][b] * at[j][b];
            if (oy < OH && ox < OW) plane[oy * OW + ox] = epilogue(sum, bias, k);
        }
    }
}
#endif
