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
 * Two implementations compute exactly the same function:
 *
 *   hardware   the SSE4.2 crc32 instruction, 8 bytes a step.  About 8
 *              bytes per 3 cycles on one dependency chain, which is far
 *              more than any disk writes.
 *   software   slicing-by-8: eight 256-entry tables, 8 bytes a step with
 *              eight table lookups.  Portable, about 1-2 bytes per cycle.
 *
 * shmq__crc32c() chooses one at its first call with
 * __builtin_cpu_supports("sse4.2") and remembers the choice in a function
 * pointer.  The choice is idempotent, so two threads racing through the
 * first call store the same pointer; the relaxed atomic load and store
 * only keep the compiler (and ThreadSanitizer) from seeing a data race.
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
 * - shmq__crc32c_sw and shmq__crc32c_hw agree on every input (spill-t
 *   checks them against each other and against the check value).
 * - The tables are built once, before the software path is first chosen,
 *   under pthread_once.
 *
 * Failure and recovery
 * --------------------
 * Nothing here fails.  Without SSE4.2 (or off x86-64) the hardware entry
 * point falls back to the software one, so callers never need to know.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spill.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
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
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

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
	return ~(uint32_t)c;
}
#endif

static bool have_hw(void)
{
#ifdef SHMQ_CRC_HW
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
#else
	return false;
#endif
}

uint32_t shmq__crc32c_hw(uint32_t crc, const void *buf, size_t n)
{
#ifdef SHMQ_CRC_HW
	if (have_hw())
		return crc32c_sse42(crc, buf, n);
#endif
	return shmq__crc32c_sw(crc, buf, n);
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static uint32_t crc32c_first(uint32_t crc, const void *buf, size_t n);
static crc_fn crc_impl = crc32c_first;

static crc_fn choose(void)
{
#ifdef SHMQ_CRC_HW
	if (have_hw())
		return crc32c_sse42;
#endif
	return shmq__crc32c_sw;
}

/* The first call decides; every later one goes straight to the choice. */
static uint32_t crc32c_first(uint32_t crc, const void *buf, size_t n)
{
	crc_fn f = choose();

	__atomic_store_n(&crc_impl, f, __ATOMIC_RELAXED);
	return f(crc, buf, n);
}

uint32_t shmq__crc32c(uint32_t crc, const void *buf, size_t n)
{
	return __atomic_load_n(&crc_impl, __ATOMIC_RELAXED)(crc, buf, n);
}

const char *shmq__crc32c_impl(void)
{
	return have_hw() ? "sse4.2" : "slicing-by-8";
}
