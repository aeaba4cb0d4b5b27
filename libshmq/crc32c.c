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
 * Four implementations compute exactly the same function:
 *
 *   fold       VPCLMULQDQ on 256-bit registers (AVX2): 128 bytes a step
 *              folded into four registers by carry-less multiplies, the
 *              crc32 instruction only for the last 16 bytes and the tail
 *              (see crc32c_fold).  15 GB/s against 12-13 for three streams
 *              on 1 KiB in cache, 23 against 20 on 4 KiB, on this project's
 *              test machine (AMD EPYC, Zen 3), and it keeps the crc32 unit
 *              free.  Used from 256 bytes up, shorter buffers as below.
 *   sse4.2 x3  the SSE4.2 crc32 instruction on three streams at once,
 *              joined with one carry-less multiply (PCLMULQDQ) per block
 *              (see crc32c_sse42x3).  The instruction has a latency of 3
 *              cycles but the CPU can start about one a cycle, so three
 *              independent chains go about 2.5x as fast as one: 18 GB/s
 *              against 7 on the same machine for buffers of 1 KiB and more.
 *              Used from 192 bytes up; shorter buffers (frame headers)
 *              take the one chain.
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
 * __builtin_cpu_supports ("vpclmulqdq" and "avx2", "pclmul", "sse4.2"; the
 * AVX2 check includes the OS saving the registers) and remembers the choice
 * in a function pointer.  The choice is idempotent, so two threads racing
 * through the first call store the same pointer.  The store is a release
 * and every load an acquire (a plain load on x86), so a thread that finds
 * the three-stream or folding function also sees its constants, which the
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
 * - shmq__crc32c_sw, _hw, _hw3 and _fold agree on every input (spill-t
 *   checks them against each other on every length that reaches every
 *   join constant and every folding tail, and against the check value).
 * - The tables are built once, before the software path is first chosen,
 *   under pthread_once; the join and fold constants likewise before the
 *   three-stream and folding paths are.
 *
 * Failure and recovery
 * --------------------
 * Nothing here fails.  Without VPCLMULQDQ and AVX2 the folding entry point
 * falls back to three streams, without PCLMULQDQ the three-stream one to
 * the one chain, without SSE4.2 (or off x86-64) to the software one, so
 * callers never need to know.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spill.h"

#if defined(__x86_64__)
#include <immintrin.h>
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

/*
 * Folding with VPCLMULQDQ (AVX2, 256 bits).  Where the CPU has it, the
 * buffer is not run through crc32q at all but folded: 128 bytes at a time
 * in four 256-bit registers, each of two independent 128-bit lanes, and
 * only the last 16 bytes of what is left go through the crc32 instruction.
 *
 * A 128-bit lane A read from memory holds 128 message bits, the first one
 * sent at bit 0, so in this CRC's reflected order its low qword A0 is the
 * coefficients of x^127 .. x^64 and its high qword A1 those of x^63 .. x^0:
 * A = A0 * x^64 + A1.  Message bits D further on, A contributes
 * A * x^D, and modulo P that is
 *
 *	A0 * (x^(64+D) mod P) + A1 * (x^D mod P)
 *
 * a polynomial of degree below 128 again, so it can be xored into the lane
 * D bits further on and the 128 bits of A forgotten.  As the three-stream
 * comment above works out, clmul of a qword by a 32-bit register k is the
 * qword * k * x^33, so the constants are k = x^(64+D-33) and x^(D-33) mod P,
 * with the product in the same reflected order as a lane read from memory.
 * What is left at the end, one lane F and fewer than 16 bytes, is run
 * through crc32q from 0: F stands in for everything before it, and the
 * register after it, times what follows, is the CRC (reduction included).
 *
 * The caller's CRC enters as the three-stream one does: xored into the
 * first 32 bits of the message (the inverted register is linear in it).
 *
 * 128 bytes take 8 carry-less multiplies, whose latency the four
 * registers hide; the crc32 instruction would take 16 steps on three
 * streams plus their joins.
 */
#define FOLD_MIN 256	/* below that, the lanes' reductions cost more than they save */

/* For D = 128, 256, 512, 768, 1024 bits: {x^(64+D-33), x^(D-33)} mod P. */
static uint64_t fold_k[5][2];
static pthread_once_t fold_once = PTHREAD_ONCE_INIT;

/* x^n mod P, as a reflected 32-bit register (x^31 is bit 0). */
static uint32_t xpow_mod(unsigned n)
{
	uint32_t c = 0x80000000u; /* x^0 */

	while (n--)
		c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
	return c;
}

static void fold_init(void)
{
	static const unsigned d[5] = { 128, 256, 512, 768, 1024 };
	int i;

	for (i = 0; i < 5; i++) {
		fold_k[i][0] = xpow_mod(64 + d[i] - 33);
		fold_k[i][1] = xpow_mod(d[i] - 33);
	}
}

#define FOLD_ATTR __attribute__((target("sse4.2,pclmul,avx2,vpclmulqdq")))

/* Both lanes of y moved D bits on (k from fold_k for D), reduced. */
FOLD_ATTR static inline __m256i fold256(__m256i y, __m256i k)
{
	return _mm256_xor_si256(_mm256_clmulepi64_epi128(y, k, 0x00),
				_mm256_clmulepi64_epi128(y, k, 0x11));
}

FOLD_ATTR static inline __m128i fold128(__m128i x, __m128i k)
{
	return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
			     _mm_clmulepi64_si128(x, k, 0x11));
}

FOLD_ATTR static inline __m256i fold_k256(int i)
{
	return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)fold_k[i]));
}

FOLD_ATTR
static uint32_t crc32c_fold(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	__m256i y0, y1, y2, y3, k;
	__m128i x, k128;
	uint64_t c;

	/* Frame headers (32 bytes) straight to the one chain. */
	if (n < 3 * 8 * CRC3_MINW)
		return ~(uint32_t)crc32c_chain(~crc, p, n);
	if (n < FOLD_MIN)
		return crc32c_sse42x3(crc, buf, n);
	y0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p),
			      _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)~crc)));
	y1 = _mm256_loadu_si256((const __m256i *)(p + 32));
	y2 = _mm256_loadu_si256((const __m256i *)(p + 64));
	y3 = _mm256_loadu_si256((const __m256i *)(p + 96));
	p += 128;
	n -= 128;
	k = fold_k256(4);
	while (n >= 128) {
		y0 = _mm256_xor_si256(fold256(y0, k), _mm256_loadu_si256((const __m256i *)p));
		y1 = _mm256_xor_si256(fold256(y1, k), _mm256_loadu_si256((const __m256i *)(p + 32)));
		y2 = _mm256_xor_si256(fold256(y2, k), _mm256_loadu_si256((const __m256i *)(p + 64)));
		y3 = _mm256_xor_si256(fold256(y3, k), _mm256_loadu_si256((const __m256i *)(p + 96)));
		p += 128;
		n -= 128;
	}
	/* Four registers into the last: 96, 64 and 32 bytes on. */
	y3 = _mm256_xor_si256(y3, fold256(y0, fold_k256(3)));
	y3 = _mm256_xor_si256(y3, fold256(y1, fold_k256(2)));
	y3 = _mm256_xor_si256(y3, fold256(y2, fold_k256(1)));
	/* Its two lanes into the high one, then 16 bytes at a time. */
	k128 = _mm_loadu_si128((const __m128i *)fold_k[0]);
	x = _mm_xor_si128(fold128(_mm256_castsi256_si128(y3), k128),
			  _mm256_extracti128_si256(y3, 1));
	while (n >= 16) {
		x = _mm_xor_si128(fold128(x, k128), _mm_loadu_si128((const __m128i *)p));
		p += 16;
		n -= 16;
	}
	c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
	c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(x, 1));
	/*
	 * The compiler leaves the upper halves dirty here (measured: no
	 * vzeroupper), and the caller's next legacy-SSE instruction then
	 * waits on them: the replay of 1 KiB frames went 0.45x -> 0.33x of a
	 * plain read before this.
	 */
	_mm256_zeroupper();
	return ~(uint32_t)crc32c_chain(c, p, n);
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

static bool have_fold(void)
{
#ifdef SHMQ_CRC_HW
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul") &&
	       __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq");
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

uint32_t shmq__crc32c_fold(uint32_t crc, const void *buf, size_t n)
{
#ifdef SHMQ_CRC_HW
	if (have_fold()) {
		pthread_once(&shift_once, shift_init);
		pthread_once(&fold_once, fold_init);
		return crc32c_fold(crc, buf, n);
	}
#endif
	return shmq__crc32c_hw3(crc, buf, n);
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static uint32_t crc32c_first(uint32_t crc, const void *buf, size_t n);
static crc_fn crc_impl = crc32c_first;

static crc_fn choose(void)
{
#ifdef SHMQ_CRC_HW
	if (have_fold()) {
		/* Before the pointer is published: callers never see it unset. */
		pthread_once(&shift_once, shift_init);
		pthread_once(&fold_once, fold_init);
		return crc32c_fold;
	}
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
	if (have_fold())
		return "vpclmulqdq fold (avx2)";
	if (have_x3())
		return "sse4.2 x3 + pclmul";
	return have_sse42() ? "sse4.2" : "slicing-by-8";
}
