/*
 * crc32c.c - CRC-32C (Castagnoli), the checksum of spill frames, segment
 * and index headers, and group checkpoints.
 *
 * Overview
 * --------
 * CRC-32C is the CRC with the reflected polynomial 0x82F63B78, initial
 * value 0xFFFFFFFF and final xor 0xFFFFFFFF (RFC 3720, iSCSI; the same
 * checksum as ext4, Btrfs and Kafka's record batches).  The standard check
 * value is crc32c("123456789") = 0xE3069283.
 *
 * Three implementations compute exactly the same function:
 *
 *   sse4.2 x3  the SSE4.2 crc32 instruction on three streams at once,
 *              joined with one carry-less multiply (PCLMULQDQ) per block
 *              (see crc32c_sse42x3).  The instruction has a latency of 3
 *              cycles but the CPU can start about one a cycle, so three
 *              independent chains go about 2.5x as fast as one: 18 GB/s
 *              against 7 on this project's test machine (AMD EPYC, Zen 3)
 *              for buffers of 1 KiB and more.  Used from 192 bytes up;
 *              shorter buffers (frame headers) take the one chain.
 *   sse4.2     the same instruction on one dependency chain, 8 bytes per
 *              3 cycles; for CPUs with SSE4.2 but no PCLMULQDQ.
 *   software   slicing-by-8: eight 256-entry tables, 8 bytes a step with
 *              eight table lookups.  Portable, about 1-2 bytes per cycle.
 *
 * Why it matters: every spilled frame's CRC is checked before a replaying
 * consumer delivers it, and with one chain the check was 72 % of a warm
 * replay's time (bench/README.md).
 *
 * shmq__crc32c() chooses one at its first call with
 * __builtin_cpu_supports("sse4.2") and ("pclmul") and remembers the choice
 * in a function pointer.  The choice is idempotent, so two threads racing
 * through the first call store the same pointer.  The store is a release
 * and every load an acquire (a plain load on x86), so a thread that finds
 * the three-stream function also sees its join constants, which the
 * chooser computed first under pthread_once.
 *
 * Chaining: shmq__crc32c(shmq__crc32c(0, a, n), b, m) equals the CRC of a
 * followed by b, because the pre and post inversions cancel.
 *
 * On-disk format
 * --------------
 * None of its own.  A CRC is stored as a little-endian uint32 wherever the
 * spill formats place it (docs/spill-format.md):
 *
 *   byte  0      1      2      3
 *        +------+------+------+------+
 *        | crc & 0xff ... crc >> 24  |
 *        +------+------+------+------+
 *
 * Invariants
 * ----------
 * - shmq__crc32c_sw, _hw and _hw3 agree on every input (spill-t checks
 *   them against each other on every length that reaches every join
 *   constant, and against the check value).
 * - The tables are built once, before the software path is first chosen,
 *   under pthread_once; the join constants likewise before the
 *   three-stream path is.
 *
 * Failure and recovery
 * --------------------
 * Nothing here fails.  Without PCLMULQDQ the three-stream entry point
 * falls back to the one chain, without SSE4.2 (or off x86-64) to the
 * software one, so callers never need to know.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spill.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#include <wmmintrin.h>
#define SHMQ_CRC_HW 1
#endif

#define CRC32C_POLY 0x82f63b78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		table[0][i] = c;
	}
	/* table[k][i]: the CRC of byte i followed by k zero bytes. */
	for (i = 0; i < 256; i++) {
		c = table[0][i];
		for (j = 1; j < 8; j++) {
			c = table[0][c & 0xff] ^ (c >> 8);
			table[j][i] = c;
		}
	}
}

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	/* memcpy: p need not be aligned.  x86-64 is little-endian. */
	memcpy(&v, p, sizeof(v));
	return v;
}

uint32_t shmq__crc32c_sw(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	pthread_once(&table_once, table_init);
	crc = ~crc;
	while (n && ((uintptr_t)p & 7)) {
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		n--;
	}
	while (n >= 8) {
		uint64_t w = load_le64(p) ^ crc;

		crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
		      table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
		      table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
		      table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
		p += 8;
		n -= 8;
	}
	while (n--)
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#ifdef SHMQ_CRC_HW
/*
 * One dependency chain: the CRC register goes through every crc32q, so a
 * step waits for the one before (3 cycles of latency), however many the
 * CPU could start per cycle.  For short buffers, and without PCLMULQDQ.
 */
__attribute__((target("sse4.2")))
static uint64_t crc32c_chain(uint64_t c, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		c = _mm_crc32_u64(c, load_le64(p));
		p += 8;
		n -= 8;
	}
	while (n--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return c;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *buf, size_t n)
{
	return ~(uint32_t)crc32c_chain(~crc, buf, n);
}

/*
 * Three chains.  A block of 3 x 8m bytes is cut into three runs A, B, C
 * of 8m bytes each, and one loop steps the three registers together: they
 * do not depend on each other, so the CPU overlaps them and the block
 * costs about a third of the single chain.  A starts from the register so
 * far, B and C from 0; then they are joined.
 *
 * Joining.  Without the pre and post inversions (which chaining cancels,
 * see the top) the register is linear over GF(2): the register after
 * "A then B" is the register after A followed by 8m zero bytes, xored
 * with the register after B alone from 0.  And running a register r over
 * k zero bytes multiplies it by x^(8k) modulo the polynomial P.  So
 *
 *	reg(A B C) = a * x^(16*8m) + b * x^(8*8m) + c	(mod P)
 *
 * The multiplication is a carry-less one (PCLMULQDQ) by a constant, and
 * the reduction modulo P is a crc32q of the product.  In the bit-reflected
 * order of this CRC (bit i of a 32-bit register is the coefficient of
 * x^(31-i), bit i of a 64-bit word that of x^(63-i)):
 *
 *   - clmul(a, k) of two 32-bit registers puts the product of coefficients
 *     i and j at bit i + j, which in a 64-bit word is x^(63-i-j) =
 *     x^(31-i) * x^(31-j) * x: the 64-bit word is a * k * x;
 *   - crc32q(0, w) is w * x^32 mod P (a crc32q step: the register, here
 *     0, times x^64, plus the word, all times x^32);
 *
 * so crc32q(0, clmul(a, k)) = a * k * x^33 mod P, and the constant that
 * moves a register over 8m zero bytes is k = x^(64m - 33) mod P.
 * shift_k[m] holds it for m = 1 .. 2 * CRC3_MAXW, computed at the first
 * call from the polynomial alone (shift_init).  Both products of a join
 * are xored before the one reduction, since the reduction is linear too.
 */
#define CRC3_MAXW 256	/* 64-bit words per run: blocks of up to 6 KiB */
#define CRC3_MINW 8	/* below 3 x 64 bytes the join costs more than it saves */

static uint32_t shift_k[2 * CRC3_MAXW + 1];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

static void shift_init(void)
{
	uint32_t c = 1;	/* x^31: the constant for m = 1, 64 - 33 = 31 */
	unsigned m, j;

	shift_k[0] = 0;
	for (m = 1; m <= 2 * CRC3_MAXW; m++) {
		shift_k[m] = c;
		/* Times x^64, one x at a time: a reflected shift, reduced. */
		for (j = 0; j < 64; j++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
	}
}

__attribute__((target("sse4.2,pclmul")))
static uint32_t crc32c_sse42x3(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	uint64_t a = ~crc;

	while (n && ((uintptr_t)p & 7)) {
		a = _mm_crc32_u8((uint32_t)a, *p++);
		n--;
	}
	while (n >= 3 * 8 * CRC3_MINW) {
		size_t m = n / 24, i;
		const uint8_t *pb, *pc;
		uint64_t b = 0, c = 0;
		__m128i ka, kb, w;

		if (m > CRC3_MAXW)
			m = CRC3_MAXW;
		pb = p + 8 * m;
		pc = pb + 8 * m;
		for (i = 0; i < 8 * m; i += 8) {
			a = _mm_crc32_u64(a, load_le64(p + i));
			b = _mm_crc32_u64(b, load_le64(pb + i));
			c = _mm_crc32_u64(c, load_le64(pc + i));
		}
		ka = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)a),
					  _mm_cvtsi32_si128((int)shift_k[2 * m]), 0x00);
		kb = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)b),
					  _mm_cvtsi32_si128((int)shift_k[m]), 0x00);
		w = _mm_xor_si128(ka, kb);
		a = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(w)) ^ c;
		p += 24 * m;
		n -= 24 * m;
	}
	return ~(uint32_t)crc32c_chain(a, p, n);
}
#endif

static bool have_sse42(void)
{
#ifdef SHMQ_CRC_HW
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
#else
	return false;
#endif
}

static bool have_x3(void)
{
#ifdef SHMQ_CRC_HW
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul");
#else
	return false;
#endif
}

uint32_t shmq__crc32c_hw(uint32_t crc, const void *buf, size_t n)
{
#ifdef SHMQ_CRC_HW
	if (have_sse42())
		return crc32c_sse42(crc, buf, n);
#endif
	return shmq__crc32c_sw(crc, buf, n);
}

uint32_t shmq__crc32c_hw3(uint32_t crc, const void *buf, size_t n)
{
#ifdef SHMQ_CRC_HW
	if (have_x3()) {
		pthread_once(&shift_once, shift_init);
		return crc32c_sse42x3(crc, buf, n);
	}
#endif
	return shmq__crc32c_hw(crc, buf, n);
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static uint32_t crc32c_first(uint32_t crc, const void *buf, size_t n);
static crc_fn crc_impl = crc32c_first;

static crc_fn choose(void)
{
#ifdef SHMQ_CRC_HW
	if (have_x3()) {
		/* Before the pointer is published: callers never see it unset. */
		pthread_once(&shift_once, shift_init);
		return crc32c_sse42x3;
	}
	if (have_sse42())
		return crc32c_sse42;
#endif
	return shmq__crc32c_sw;
}

/* The first call decides; every later one goes straight to the choice. */
static uint32_t crc32c_first(uint32_t crc, const void *buf, size_t n)
{
	crc_fn f = choose();

	__atomic_store_n(&crc_impl, f, __ATOMIC_RELEASE);
	return f(crc, buf, n);
}

uint32_t shmq__crc32c(uint32_t crc, const void *buf, size_t n)
{
	return __atomic_load_n(&crc_impl, __ATOMIC_ACQUIRE)(crc, buf, n);
}

const char *shmq__crc32c_impl(void)
{
	if (have_x3())
		return "sse4.2 x3 + pclmul";
	return have_sse42() ? "sse4.2" : "slicing-by-8";
}
