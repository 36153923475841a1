/*
 * threads.c: one thread count for the kernels and for BLAS.
 *
 * With OpenMP the kernels' parallel loops and OpenBLAS's OpenMP build share
 * libgomp's pool, and OpenBLAS runs a call single-threaded when it comes
 * from inside a parallel region. Without OpenMP the count only reaches BLAS.
 */
#include "ops_impl.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int tg_set_num_threads(int n)
{
    int prev = tg_num_threads();
    if (n >= 1) {
#ifdef _OPENMP
        omp_set_num_threads(n);
#endif
        openblas_set_num_threads(n);
    }
    return prev;
}

bool tg__threads_many(void)
{
#ifdef _OPENMP
    return omp_get_max_threads() > 1;
#else
    return false;
#endif
}

int tg_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return openblas_get_num_threads();
#endif
}
