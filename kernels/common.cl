// Shared definitions prepended to every clconv kernel source.
//
// Build options (-D) read here:
//   USE_DOUBLE      1 computes in double (needs cl_khr_fp64), 0 in float.
//   ACTIVATION      fused epilogue: 0 none, 1 relu, 2 relu6, 3 leaky_relu, 4 sigmoid, 5 tanh.
//   NEGATIVE_SLOPE  leaky_relu slope, a floating literal.
//   HAS_BIAS        1 adds bias[output channel] before the activation.
//
// Tensors are NCHW and contiguous: element (n, c, y, x) of a [N, C, H, W] tensor sits at
// ((n * C + c) * H + y) * W + x.

#if USE_DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double real;
typedef double4 real4;
typedef double8 real8;
#define vload_real4 vload4
#define vload_real8 vload8
#else
typedef float real;
typedef float4 real4;
typedef float8 real8;
#define vload_real4 vload4
#define vload_real8 vload8
#endif

#ifndef ACTIVATION
#define ACTIVATION 0
#endif
#ifndef NEGATIVE_SLOPE
#define NEGATIVE_SLOPE 0.01
#endif
#ifndef HAS_BIAS
#define HAS_BIAS 0
#endif

// The comparisons are written so that NaN propagates as in PyTorch: NaN < 0 is false, so a NaN
// input leaves every branch unchanged.
inline real activate(real x) {
#if ACTIVATION == 1
    return x < (real)0 ? (real)0 : x;
#elif ACTIVATION == 2
    return x < (real)0 ? (real)0 : (x > (real)6 ? (real)6 : x);
#elif ACTIVATION == 3
    return x < (real)0 ? x * (real)NEGATIVE_SLOPE : x;
#elif ACTIVATION == 4
    return (real)1 / ((real)1 + exp(-x));
#elif ACTIVATION == 5
    return tanh(x);
#else
    return x;
#endif
}

// Epilogue for one output element: bias, then the activation.
inline real epilogue(real acc, __global const real* bias, int channel) {
#if HAS_BIAS
    acc += bias[channel];
#endif
    return activate(acc);
}

// epilogue() applied to every lane of a real4 or real8: epilogue_real4, epilogue_real8. The
// comparisons are the same as activate()'s, so NaN propagates the same way.
#define DEFINE_EPILOGUE_VECTOR(T)                                                          \
    inline T epilogue_##T(T acc, __global const real* bias, int channel) {                 \
        EPILOGUE_VECTOR_BIAS(T)                                                            \
        return ACTIVATE_VECTOR(T, acc);                                                    \
    }
#if HAS_BIAS
#define EPILOGUE_VECTOR_BIAS(T) acc += (T)(bias[channel]);
#else
#define EPILOGUE_VECTOR_BIAS(T)
#endif
#if ACTIVATION == 1
#define ACTIVATE_VECTOR(T, x) select(x, (T)(0), x < (T)(0))
#elif ACTIVATION == 2
#define ACTIVATE_VECTOR(T, x) select(select(x, (T)(6), x > (T)(6)), (T)(0), x < (T)(0))
#elif ACTIVATION == 3
#define ACTIVATE_VECTOR(T, x) select(x, x * (T)(NEGATIVE_SLOPE), x < (T)(0))
#elif ACTIVATION == 4
#define ACTIVATE_VECTOR(T, x) ((T)(1) / ((T)(1) + exp(-x)))
#elif ACTIVATION == 5
#define ACTIVATE_VECTOR(T, x) tanh(x)
#else
#define ACTIVATE_VECTOR(T, x) (x)
#endif
DEFINE_EPILOGUE_VECTOR(real4)
DEFINE_EPILOGUE_VECTOR(real8)
// epilogue_vector for a type chosen by a macro: CONCAT_EPILOGUE(realv) -> epilogue_real8.
#define CONCAT_EPILOGUE_(T) epilogue_##T
#define CONCAT_EPILOGUE(T) CONCAT_EPILOGUE_(T)

// Input channel read by local channel ic of group g. With CHANNEL_MAP_KG and CHANNEL_MAP_CG set,
// channels are reordered for the second pass of a factored rank-1 convolution, whose group
// g = (output group) * KG + j reads the intermediate channel (input channel) * KG + j.
#ifdef CHANNEL_MAP_KG
#define IN_CHANNEL(g, ic) \
    ((((g) / CHANNEL_MAP_KG) * CHANNEL_MAP_CG + (ic)) * CHANNEL_MAP_KG + (g) % CHANNEL_MAP_KG)
#else
#define IN_CHANNEL(g, ic) ((g) * CIN_PG + (ic))
#endif

#if defined(SW) && defined(W)
// Four values of one input row at columns ix0, ix0 + SW, ix0 + 2*SW and ix0 + 3*SW, with zero for
// columns outside [0, W) (zero padding). Defined for kernels built with SW and W.
inline real4 load_columns(__global const real* row, int ix0) {
#if SW == 1
    if (ix0 >= 0 && ix0 + 3 < W) return vload_real4(0, row + ix0);
#endif
    real4 v;
    int ix = ix0;
    v.s0 = (ix >= 0 && ix < W) ? row[ix] : (real)0;
    ix += SW;
    v.s1 = (ix >= 0 && ix < W) ? row[ix] : (real)0;
    ix += SW;
    v.s2 = (ix >= 0 && ix < W) ? row[ix] : (real)0;
    ix += SW;
    v.s3 = (ix >= 0 && ix < W) ? row[ix] : (real)0;
    return v;
}
#endif

#ifdef WINO_M
// Winograd F(WINO_M x WINO_M, 3 x 3): the transformed tile size and the rows of B^T (A x A) and
// A^T (M x A), for the interpolation points 0, 1, -1 (and 2, -2 for M = 4).
#define WINO_A (WINO_M + 2)

// Rows of B^T (A x A), G (A x 3) and A^T (M x A).
#if WINO_M == 2
#define BT_ROWS {1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}
#define AT_ROWS {1, 1, 1, 0}, {0, 1, -1, -1}
#elif WINO_M == 4
#define BT_ROWS                                                                         \
    {4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0}, \
        {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}
#define AT_ROWS \
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}
#else
#error "WINO_M must be 2 or 4"
#endif
#endif
