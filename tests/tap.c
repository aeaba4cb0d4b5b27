/* tap.c - see tap.h. */
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int planned = -1;
static int run;
static int failed;
static int in_child;

static void vline(const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];

	vsnprintf(buf, sizeof buf, fmt, ap);
	printf("%s%s\n", prefix, buf);
	fflush(stdout);
}

void plan(int n)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

static int report(int cond, const char *file, int line, const char *fmt, va_list ap)
{
	char name[512];

	vsnprintf(name, sizeof name, fmt, ap);
	if (in_child) {
		if (!cond)
			fprintf(stderr, "# child check failed: %s at %s:%d\n", name, file, line);
		return cond;
	}
	run++;
	if (!cond)
		failed++;
	printf("%sok %d - %s\n", cond ? "" : "not ", run, name);
	if (!cond)
		printf("#   Failed at %s line %d\n", file, line);
	fflush(stdout);
	return cond;
}

int ok_at(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report(cond, file, line, fmt, ap);
	va_end(ap);
	return cond;
}

int is_int_at(long long got, long long want, const char *file, int line,
	      const char *fmt, ...)
{
	va_list ap;
	int cond = got == want;

	va_start(ap, fmt);
	report(cond, file, line, fmt, ap);
	va_end(ap);
	if (!cond)
		diag("     got: %lld\n#   expected: %lld", got, want);
	return cond;
}

int is_u64_at(uint64_t got, uint64_t want, const char *file, int line,
	      const char *fmt, ...)
{
	va_list ap;
	int cond = got == want;

	va_start(ap, fmt);
	report(cond, file, line, fmt, ap);
	va_end(ap);
	if (!cond)
		diag("     got: %llu\n#   expected: %llu", (unsigned long long)got,
		     (unsigned long long)want);
	return cond;
}

void diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("# ", fmt, ap);
	va_end(ap);
}

void skip(int n, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	while (n-- > 0) {
		run++;
		printf("ok %d # skip %s\n", run, why);
	}
	fflush(stdout);
}

void skip_all(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("1..0 # SKIP ", fmt, ap);
	va_end(ap);
	exit(0);
}

void bail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vline("Bail out! ", fmt, ap);
	va_end(ap);
	exit(255);
}

int tap_done(void)
{
	if (planned >= 0 && run != planned) {
		diag("planned %d tests but ran %d", planned, run);
		return 255;
	}
	return failed ? (failed > 254 ? 254 : failed) : 0;
}

void tap_child(void)
{
	in_child = 1;
}
