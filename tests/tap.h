/*
 * tap.h - a small Test Anything Protocol library for shmq's tests.
 *
 * Each test program declares a plan, reports each check with ok() or one of
 * its typed forms, and ends with tap_done(), whose value is the exit status:
 * non-zero when a check failed or the count differs from the plan.  A test
 * that cannot run calls skip_all() with the reason; a fatal condition calls
 * bail().  Output is line-buffered and safe to mix with fork(): a child that
 * reports must call tap_child() first so that its checks are not counted
 * twice.
 */
#ifndef SHMQ_TAP_H
#define SHMQ_TAP_H

#include <stdint.h>

void plan(int n);
int ok_at(int cond, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int is_int_at(long long got, long long want, const char *file, int line,
	      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int is_u64_at(uint64_t got, uint64_t want, const char *file, int line,
	      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void skip(int n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void bail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int tap_done(void);
/* In a forked child: its checks are not reported; it reports by exit status. */
void tap_child(void);

#define ok(cond, ...) ok_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...) is_int_at((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define is_u64(got, want, ...) is_u64_at((got), (want), __FILE__, __LINE__, __VA_ARGS__)

#endif
