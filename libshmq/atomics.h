/*
 * atomics.h - the library's atomics: ck_pr, as ThreadSanitizer can see it.
 *
 * The library uses ck_pr for every atomic and fence on shared memory.  On
 * x86-64, ck_pr is inline assembly, which ThreadSanitizer cannot see: it
 * would find no happens-before edge between a producer's payload stores
 * and a consumer's reads and report the whole protocol as racy (or, were
 * the accesses through different mappings, report nothing at all).  So in
 * a ThreadSanitizer build, and only there, the ck_pr operations the library
 * uses are redirected to the compiler's __atomic builtins, with loads as
 * acquire, stores as release and read-modify-writes sequentially
 * consistent: at least as strong as what each call site asks for, and
 * precisely what ThreadSanitizer models.  Fences stay ck_pr's own: TSan does
 * not use fences for happens-before (gcc even warns about
 * atomic_thread_fence under -fsanitize=thread), and the acquire/release
 * accesses carry the edges instead.  Every other build compiles ck_pr
 * unchanged.
 *
 * Include this instead of <ck_pr.h> in libshmq.
 */
#ifndef SHMQ_ATOMICS_H
#define SHMQ_ATOMICS_H

#include <ck_pr.h>

#if defined(__SANITIZE_THREAD__)

#define SHMQ_TSAN_LOAD(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define SHMQ_TSAN_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#undef ck_pr_load_16
#undef ck_pr_load_32
#undef ck_pr_load_64
#undef ck_pr_store_16
#undef ck_pr_store_32
#undef ck_pr_store_64
#define ck_pr_load_16(p)     SHMQ_TSAN_LOAD(p)
#define ck_pr_load_32(p)     SHMQ_TSAN_LOAD(p)
#define ck_pr_load_64(p)     SHMQ_TSAN_LOAD(p)
#define ck_pr_store_16(p, v) SHMQ_TSAN_STORE(p, v)
#define ck_pr_store_32(p, v) SHMQ_TSAN_STORE(p, v)
#define ck_pr_store_64(p, v) SHMQ_TSAN_STORE(p, v)

#undef ck_pr_cas_32
#undef ck_pr_cas_64
#define ck_pr_cas_32(p, old, new)                                              \
	({ __typeof__(*(p)) shmq_old_ = (old);                                 \
	   __atomic_compare_exchange_n((p), &shmq_old_, (new), false,          \
				       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); })
#define ck_pr_cas_64(p, old, new) ck_pr_cas_32(p, old, new)

#undef ck_pr_inc_32
#undef ck_pr_dec_32
#undef ck_pr_faa_32
#undef ck_pr_fas_32
#define ck_pr_inc_32(p)	   ((void)__atomic_fetch_add((p), 1, __ATOMIC_SEQ_CST))
#define ck_pr_dec_32(p)	   ((void)__atomic_fetch_sub((p), 1, __ATOMIC_SEQ_CST))
#define ck_pr_faa_32(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define ck_pr_fas_32(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)

#endif /* __SANITIZE_THREAD__ */

#endif /* SHMQ_ATOMICS_H */
