/*
 * shmqctl.c - the command-line tool of shmq.
 *
 * Design note
 * -----------
 * shmqctl is a thin shell over include/shmq.h and nothing else, so that it
 * doubles as a check that the public API is enough to operate a namespace:
 * every command is one or two library calls plus argument checking and
 * formatting.
 *
 *   shmqctl [--dir DIR] CMD [ARGS]
 *
 * The data directory comes from --dir (before or after the command) or
 * SHMQ_DIR.  Each command parses its own options with getopt_long, so
 * "shmqctl CMD --help" documents exactly what that command accepts.
 *
 * Exit status: 0 on success, 1 when the library refused or failed (the
 * message is "shmqctl: <what failed>: <shmq_strerror>[: <shmq_errdetail>]"),
 * 2 for a usage error.  Every number is parsed in full and range-checked
 * here, before anything reaches shmqd, so that a typo is a usage error with a
 * precise message rather than a surprising topic.
 *
 * consume commits, on every way out (count reached, idle timeout, SIGINT,
 * SIGTERM, a closed stdout), exactly what it printed: the library commits
 * what has been handed out and released, so a message that could not be
 * written is first given back with shmq_consumer_seek().  Signals only set a
 * flag; the poll loop waits in slices of POLL_SLICE_MS so that it notices the
 * flag promptly even if the library restarts its futex wait after EINTR.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

#define PROG "shmqctl"

enum {
	EXIT_FAILED = 1, /* the library or the system refused */
	EXIT_USAGE = 2,	 /* the command line is wrong */
};

/* How long one poll may sleep before the loop looks at the signal flag. */
#define POLL_SLICE_MS 100

/* Option codes for long options that have no short form. */
enum {
	OPT_HELP = 'h',
	OPT_DIR = 0x100,
	OPT_PARTITIONS,
	OPT_RING_BYTES,
	OPT_MAX_MESSAGE,
	OPT_FULL,
	OPT_NUMA_NODE,
	OPT_MODE,
	OPT_STALL_TIMEOUT,
	OPT_SPILL,
	OPT_RETAIN_BYTES,
	OPT_RETAIN_MS,
	OPT_MODE_GROUP,
	OPT_KEY,
	OPT_PARTITION,
	OPT_TIMEOUT,
	OPT_GROUP,
	OPT_FROM,
	OPT_COUNT,
	OPT_PRINT_OFFSETS,
	OPT_ACK,
	OPT_ACK_TIMEOUT,
	OPT_MAX_DELIVERIES,
	OPT_DEAD_LETTER,
	OPT_UNTETHERED,
	OPT_VERSION,
};

struct command {
	const char *name;
	int (*run)(const struct command *cmd, int argc, char **argv);
	const char *synopsis;
	const char *help;
};

/* --dir given before the command; a --dir after it wins. */
static const char *dir_arg;

static volatile sig_atomic_t stop_signal;

/* ------------------------------------------------------------------------
 * Messages
 */

/*
 * Report a failed library call.  The detail string is copied before
 * shmq_strerror() runs because it is only valid until the next shmq call.
 */
static int __attribute__((format(printf, 2, 3)))
fail(int err, const char *fmt, ...)
{
	char detail[512];
	char what[512];
	va_list ap;

	snprintf(detail, sizeof(detail), "%s", shmq_errdetail());
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (detail[0])
		fprintf(stderr, PROG ": %s: %s: %s\n", what, shmq_strerror(err),
			detail);
	else
		fprintf(stderr, PROG ": %s: %s\n", what, shmq_strerror(err));
	return EXIT_FAILED;
}

static int __attribute__((format(printf, 2, 3)))
usage_error(const struct command *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "\nTry '" PROG " %s --help'.\n", cmd->name);
	else
		fputs("\nTry '" PROG " --help'.\n", stderr);
	return EXIT_USAGE;
}

/* ------------------------------------------------------------------------
 * Argument parsing.  Each parser accepts the whole string or nothing.
 */

/* A decimal unsigned number with no sign, blank or trailing text. */
static bool parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	/* strtoull would accept a sign and leading blanks; we do not. */
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

static bool parse_u64_range(const char *s, uint64_t lo, uint64_t hi,
			    uint64_t *out)
{
	uint64_t v;

	if (!parse_u64(s, &v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* A millisecond timeout: a count, or -1 for "for ever". */
static bool parse_timeout(const char *s, int *out)
{
	uint64_t v;

	if (!strcmp(s, "-1")) {
		*out = -1;
		return true;
	}
	if (!parse_u64_range(s, 0, INT_MAX, &v))
		return false;
	*out = (int)v;
	return true;
}

/* A byte count with an optional K, M or G suffix (powers of 1024). */
static bool parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {
		{ "", 0 },    { "K", 10 },   { "k", 10 },   { "KiB", 10 },
		{ "M", 20 },  { "m", 20 },   { "MiB", 20 }, { "G", 30 },
		{ "g", 30 },  { "GiB", 30 },
	};
	unsigned long long v;
	char *end;
	size_t i;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return false;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix))
			continue;
		if (units[i].shift && v > (UINT64_MAX >> units[i].shift))
			return false;
		*out = (uint64_t)v << units[i].shift;
		return true;
	}
	return false;
}

/* The rule of shmq.h: 1..SHMQ_NAME_MAX bytes of [A-Za-z0-9._-], no leading '.'. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);
	size_t i;

	if (n == 0 || n > SHMQ_NAME_MAX || s[0] == '.')
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return false;
	}
	return true;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* ------------------------------------------------------------------------
 * Common plumbing
 */

static void print_help(const struct command *cmd)
{
	printf("usage: " PROG " [--dir DIR] %s\n", cmd->synopsis);
	if (cmd->help)
		printf("\n%s", cmd->help);
	printf("\nThe data directory comes from --dir or SHMQ_DIR.\n");
}

/*
 * getopt_long over a command's arguments, which always include --dir and
 * --help.  Returns the option, -1 at the end, ':' for a missing value or
 * '?' for an unknown option.  The leading ':' keeps getopt silent so that
 * every message has our format.
 */
static int next_opt(int argc, char **argv, const struct option *opts)
{
	return getopt_long(argc, argv, ":", opts, NULL);
}

/* Handle the options every command shares; returns -1 if not one of them. */
static int common_opt(const struct command *cmd, int c, char **argv)
{
	switch (c) {
	case OPT_DIR:
		dir_arg = optarg;
		return 0;
	case OPT_HELP:
		print_help(cmd);
		exit(0);
	case ':':
		return usage_error(cmd, "option '%s' needs a value",
				   argv[optind - 1]);
	case '?':
		return usage_error(cmd, "unknown option '%s'",
				   argv[optind - 1]);
	}
	return -1;
}

/*
 * Take exactly `want` positional arguments after option parsing.  getopt
 * has moved them to the end of argv.
 */
static int positionals(const struct command *cmd, int argc, char **argv,
		       int want, char **out)
{
	int have = argc - optind;
	int i;

	if (have < want)
		return usage_error(cmd, "missing %s",
				   want == 1 ? "TOPIC" : "arguments");
	if (have > want)
		return usage_error(cmd, "unexpected argument '%s'",
				   argv[optind + want]);
	for (i = 0; i < want; i++)
		out[i] = argv[optind + i];
	if (want >= 1 && !valid_name(out[0]))
		return usage_error(cmd,
				   "bad topic name '%s' (1..%d of A-Z a-z 0-9 . _ -, not starting with '.')",
				   out[0], SHMQ_NAME_MAX);
	return 0;
}

static const char *data_dir(void)
{
	const char *d = dir_arg;

	if (!d || !*d)
		d = getenv("SHMQ_DIR");
	return d && *d ? d : NULL;
}

/* Open the namespace's client, or report why not. */
static int open_client(const struct command *cmd, shmq_client_t **client)
{
	const char *dir = data_dir();
	int err;

	if (!dir)
		return usage_error(cmd, "no data directory: use --dir DIR or set SHMQ_DIR");
	err = shmq_open(dir, NULL, client);
	if (err)
		return fail(err, "open namespace %s", dir);
	return 0;
}

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/*
 * Catch SIGINT and SIGTERM without SA_RESTART, so that a blocking read of
 * stdin returns EINTR and the command can finish cleanly.  A closed stdout
 * becomes EPIPE rather than a silent death before the commit.
 */
static void catch_stop_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------
 * create
 */

/* The words an option takes, and what each means. */
struct word {
	const char *name;
	int value;
};

static const struct word full_words[] = {
	{ "spill", SHMQ_FULL_SPILL }, { "block", SHMQ_FULL_BLOCK },
	{ "fail", SHMQ_FULL_FAIL }, { NULL, 0 },
};

static const struct word spill_words[] = {
	{ "off", SHMQ_SPILL_OFF }, { "overflow", SHMQ_SPILL_OVERFLOW },
	{ "always", SHMQ_SPILL_ALWAYS }, { NULL, 0 },
};

static const struct word mode_words[] = {
	{ "shared", SHMQ_GROUP_SHARED }, { "partitioned", SHMQ_GROUP_PARTITIONED },
	{ NULL, 0 },
};

/* Set *out from arg, one of words; a usage error (naming them) if not. */
static int parse_word(const struct command *cmd, const char *opt, const char *arg,
		      const struct word *words, int *out)
{
	char list[128] = "";
	size_t i, len = 0;

	for (i = 0; words[i].name; i++) {
		if (!strcmp(arg, words[i].name)) {
			*out = words[i].value;
			return 0;
		}
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s'%s'",
					i ? ", " : "", words[i].name);
		if (len >= sizeof(list))
			len = sizeof(list) - 1;
	}
	return usage_error(cmd, "%s: '%s' is not one of %s", opt, arg, list);
}

/* The word for value, or "?". */
static const char *word_of(const struct word *words, int value)
{
	size_t i;

	for (i = 0; words[i].name; i++)
		if (words[i].value == value)
			return words[i].name;
	return "?";
}

static int cmd_create(const struct command *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "partitions", required_argument, NULL, OPT_PARTITIONS },
		{ "ring-bytes", required_argument, NULL, OPT_RING_BYTES },
		{ "max-message", required_argument, NULL, OPT_MAX_MESSAGE },
		{ "full", required_argument, NULL, OPT_FULL },
		{ "numa-node", required_argument, NULL, OPT_NUMA_NODE },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "stall-timeout-ms", required_argument, NULL, OPT_STALL_TIMEOUT },
		{ "spill", required_argument, NULL, OPT_SPILL },
		{ "retain-bytes", required_argument, NULL, OPT_RETAIN_BYTES },
		{ "retain-ms", required_argument, NULL, OPT_RETAIN_MS },
		{ 0 },
	};
	struct shmq_topic_opts to = SHMQ_TOPIC_OPTS_INIT;
	bool have_partitions = false, have_ring = false;
	shmq_client_t *client;
	char *topic;
	uint64_t v;
	char *end;
	int c, rc;

	while ((c = next_opt(argc, argv, opts)) != -1) {
		rc = common_opt(cmd, c, argv);
		if (rc > 0)
			return rc;
		if (rc == 0)
			continue;
		switch (c) {
		case OPT_PARTITIONS:
			if (!parse_u64_range(optarg, 1, SHMQ_MAX_PARTITIONS, &v))
				return usage_error(cmd, "--partitions: '%s' is not a number in 1..%d",
						   optarg, SHMQ_MAX_PARTITIONS);
			to.partitions = (uint32_t)v;
			have_partitions = true;
			break;
		case OPT_RING_BYTES:
			if (!parse_size(optarg, &v))
				return usage_error(cmd, "--ring-bytes: '%s' is not a size (bytes, or with K, M or G)",
						   optarg);
			if (v < SHMQ_RING_MIN || v > SHMQ_RING_MAX || !is_pow2(v))
				return usage_error(cmd, "--ring-bytes: %" PRIu64 " is not a power of two in 64K..4G",
						   v);
			to.ring_bytes = v;
			have_ring = true;
			break;
		case OPT_MAX_MESSAGE:
			if (!parse_size(optarg, &v) || v == 0 || v > UINT32_MAX)
				return usage_error(cmd, "--max-message: '%s' is not a size in 1..4G-1",
						   optarg);
			to.max_message = (uint32_t)v;
			break;
		case OPT_FULL:
			rc = parse_word(cmd, "--full", optarg, full_words, &to.full_policy);
			if (rc)
				return rc;
			break;
		case OPT_SPILL:
			rc = parse_word(cmd, "--spill", optarg, spill_words, &to.spill);
			if (rc)
				return rc;
			break;
		case OPT_RETAIN_BYTES:
			if (!parse_size(optarg, &v))
				return usage_error(cmd, "--retain-bytes: '%s' is not a size", optarg);
			to.retain_bytes = v;
			break;
		case OPT_RETAIN_MS:
			if (!parse_u64_range(optarg, 0, UINT64_MAX, &v))
				return usage_error(cmd, "--retain-ms: '%s' is not a number", optarg);
			to.retain_ms = v;
			break;
		case OPT_NUMA_NODE:
			/* -1 is the library's "no binding", accepted for symmetry. */
			if (!strcmp(optarg, "-1"))
				to.numa_node = -1;
			else if (parse_u64_range(optarg, 0, INT_MAX, &v))
				to.numa_node = (int)v;
			else
				return usage_error(cmd, "--numa-node: '%s' is not a node number",
						   optarg);
			break;
		case OPT_MODE:
			errno = 0;
			v = strtoull(optarg, &end, 8);
			if (*optarg < '0' || *optarg > '7' || errno || *end ||
			    v > 0777)
				return usage_error(cmd, "--mode: '%s' is not octal permission bits (0..0777)",
						   optarg);
			to.mode = (uint32_t)v;
			break;
		case OPT_STALL_TIMEOUT:
			if (!parse_u64_range(optarg, 1, UINT32_MAX, &v))
				return usage_error(cmd, "--stall-timeout-ms: '%s' is not a number in 1..%" PRIu32,
						   optarg, UINT32_MAX);
			to.stall_timeout_ms = (uint32_t)v;
			break;
		}
	}
	rc = positionals(cmd, argc, argv, 1, &topic);
	if (rc)
		return rc;
	if (!have_partitions)
		return usage_error(cmd, "missing --partitions N");
	if (!have_ring)
		return usage_error(cmd, "missing --ring-bytes SIZE");
	if (to.max_message && to.max_message > to.ring_bytes / 2)
		return usage_error(cmd, "--max-message: %" PRIu32 " is more than half the ring (%" PRIu64 ")",
				   to.max_message, to.ring_bytes / 2);

	rc = open_client(cmd, &client);
	if (rc)
		return rc;
	rc = shmq_topic_create(client, topic, &to);
	if (rc)
		rc = fail(rc, "create topic %s", topic);
	shmq_close(client);
	return rc;
}

/* ------------------------------------------------------------------------
 * delete, list
 */

static const struct option plain_opts[] = {
	{ "dir", required_argument, NULL, OPT_DIR },
	{ "help", no_argument, NULL, OPT_HELP },
	{ 0 },
};

/* Options of commands that take only the shared ones. */
static int parse_plain(const struct command *cmd, int argc, char **argv)
{
	int c, rc;

	while ((c = next_opt(argc, argv, plain_opts)) != -1) {
		rc = common_opt(cmd, c, argv);
		if (rc > 0)
			return rc;
	}
	return 0;
}

static int cmd_delete(const struct command *cmd, int argc, char **argv)
{
	shmq_client_t *client;
	char *topic;
	int rc;

	rc = parse_plain(cmd, argc, argv);
	if (!rc)
		rc = positionals(cmd, argc, argv, 1, &topic);
	if (!rc)
		rc = open_client(cmd, &client);
	if (rc)
		return rc;
	rc = shmq_topic_delete(client, topic);
	if (rc)
		rc = fail(rc, "delete topic %s", topic);
	shmq_close(client);
	return rc;
}

static int cmd_group_delete(const struct command *cmd, int argc, char **argv)
{
	shmq_client_t *client;
	char *args[2];
	int rc;

	rc = parse_plain(cmd, argc, argv);
	if (!rc)
		rc = positionals(cmd, argc, argv, 2, args);
	if (!rc)
		rc = open_client(cmd, &client);
	if (rc)
		return rc;
	rc = shmq_group_delete(client, args[0], args[1]);
	if (rc)
		rc = fail(rc, "delete group %s of topic %s", args[1], args[0]);
	shmq_close(client);
	return rc;
}

static int print_name(const char *name, void *arg)
{
	(void)arg;
	return puts(name) == EOF ? -EIO : 0;
}

static int cmd_list(const struct command *cmd, int argc, char **argv)
{
	shmq_client_t *client;
	int rc;

	rc = parse_plain(cmd, argc, argv);
	if (!rc)
		rc = positionals(cmd, argc, argv, 0, NULL);
	if (!rc)
		rc = open_client(cmd, &client);
	if (rc)
		return rc;
	rc = shmq_topic_list(client, print_name, NULL);
	if (rc)
		rc = fail(rc, "list topics");
	shmq_close(client);
	return rc;
}

/* ------------------------------------------------------------------------
 * stat: aligned tables
 */

#define TABLE_COLS 8
#define CELL_MAX 40

struct table {
	const char *align; /* one 'l' or 'r' per column */
	int cols;
	size_t rows, cap;
	char (*cells)[TABLE_COLS][CELL_MAX];
};

static void __attribute__((format(printf, 3, 4)))
cell(struct table *t, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->cells[t->rows - 1][col], CELL_MAX, fmt, ap);
	va_end(ap);
}

static int add_row(struct table *t)
{
	if (t->rows == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		void *p = realloc(t->cells, cap * sizeof(*t->cells));

		if (!p)
			return -ENOMEM;
		t->cells = p;
		t->cap = cap;
	}
	memset(t->cells[t->rows], 0, sizeof(*t->cells));
	t->rows++;
	return 0;
}

static void print_table(const struct table *t, const char *indent)
{
	int width[TABLE_COLS] = { 0 };
	size_t r;
	int c;

	for (r = 0; r < t->rows; r++)
		for (c = 0; c < t->cols; c++) {
			int w = (int)strlen(t->cells[r][c]);

			if (w > width[c])
				width[c] = w;
		}
	for (r = 0; r < t->rows; r++) {
		char line[TABLE_COLS * (CELL_MAX + 2) + 64];
		size_t len = 0;

		len += (size_t)snprintf(line, sizeof(line), "%s", indent);
		for (c = 0; c < t->cols && len < sizeof(line); c++) {
			int w = t->align[c] == 'l' ? -width[c] : width[c];

			len += (size_t)snprintf(line + len, sizeof(line) - len,
						"%s%*s", c ? "  " : "", w,
						t->cells[r][c]);
		}
		if (len >= sizeof(line))
			len = sizeof(line) - 1;
		/* No trailing blanks after left-aligned or empty last cells. */
		while (len && line[len - 1] == ' ')
			len--;
		printf("%.*s\n", (int)len, line);
	}
}

/* "4 MiB" when exact, else the byte count. */
static void fmt_size(char *buf, size_t n, uint64_t v)
{
	static const char *const unit[] = { "GiB", "MiB", "KiB" };
	static const unsigned shift[] = { 30, 20, 10 };
	size_t i;

	for (i = 0; i < 3; i++)
		if (v && !(v & ((1ull << shift[i]) - 1))) {
			snprintf(buf, n, "%" PRIu64 " %s", v >> shift[i], unit[i]);
			return;
		}
	snprintf(buf, n, "%" PRIu64 " B", v);
}

static int print_topic_stat(const struct shmq_topic_stat *st)
{
	struct table parts = { .align = "rrrrrrrl", .cols = 8 };
	struct table groups = { .align = "lrrrrrlr", .cols = 8 };
	char ring[32], maxmsg[32], numa[16];
	const char *policy;
	uint32_t p, g;
	int rc = 0;

	fmt_size(ring, sizeof(ring), st->ring_bytes);
	fmt_size(maxmsg, sizeof(maxmsg), st->max_message);
	policy = word_of(full_words, st->full_policy);
	if (st->numa_node < 0)
		snprintf(numa, sizeof(numa), "-");
	else
		snprintf(numa, sizeof(numa), "%d", st->numa_node);
	printf("topic %s: %" PRIu32 " partition%s, ring %s, max message %s, full %s, spill %s, numa %s, producers %" PRIu32 "\n",
	       st->name, st->partition_count,
	       st->partition_count == 1 ? "" : "s", ring, maxmsg, policy,
	       word_of(spill_words, st->spill),
	       numa, st->producers);

	if (add_row(&parts))
		goto nomem;
	cell(&parts, 0, "PARTITION");
	cell(&parts, 1, "FIRST");
	cell(&parts, 2, "NEXT");
	cell(&parts, 3, "USED");
	cell(&parts, 4, "USED%%");
	cell(&parts, 5, "DISK");
	cell(&parts, 6, "DISK-BYTES");
	cell(&parts, 7, "%s", "");
	for (p = 0; p < st->partition_count; p++) {
		const struct shmq_partition_stat *ps = &st->partitions[p];

		if (add_row(&parts))
			goto nomem;
		cell(&parts, 0, "%" PRIu32, p);
		cell(&parts, 1, "%" PRIu64, ps->first_offset);
		cell(&parts, 2, "%" PRIu64, ps->next_offset);
		cell(&parts, 3, "%" PRIu64, ps->used_bytes);
		cell(&parts, 4, "%.1f%%",
		     st->ring_bytes ? 100.0 * (double)ps->used_bytes /
					      (double)st->ring_bytes :
				      0.0);
		if (st->spill != SHMQ_SPILL_OFF && ps->disk_end != ps->disk_first)
			cell(&parts, 5, "%" PRIu64 "..%" PRIu64, ps->disk_first, ps->disk_end);
		else
			cell(&parts, 5, "-");
		cell(&parts, 6, "%" PRIu64, ps->disk_bytes);
		if (ps->error)
			cell(&parts, 7, "error: %s", shmq_strerror(ps->error));
		else if (ps->spill_error)
			cell(&parts, 7, "spill error: %s", shmq_strerror(ps->spill_error));
	}
	print_table(&parts, "  ");

	if (st->group_count == 0) {
		printf("  no groups\n");
		goto out;
	}
	if (add_row(&groups))
		goto nomem;
	cell(&groups, 0, "GROUP");
	cell(&groups, 1, "MEMBERS");
	cell(&groups, 2, "PARTITION");
	cell(&groups, 3, "COMMITTED");
	cell(&groups, 4, "NEXT");
	cell(&groups, 5, "LAG");
	cell(&groups, 6, "READS");
	cell(&groups, 7, "OWNER");
	for (g = 0; g < st->group_count; g++) {
		const struct shmq_group_stat *gs = &st->groups[g];

		/*
		 * The group's name is repeated on each row so that
		 * "shmqctl stat | grep GROUP" shows all of it.
		 */
		for (p = 0; p < st->partition_count; p++) {
			const struct shmq_group_partition_stat *gp =
				&gs->partitions[p];

			if (add_row(&groups))
				goto nomem;
			cell(&groups, 0, "%s", gs->name);
			cell(&groups, 1, "%" PRIu32, gs->members);
			cell(&groups, 2, "%" PRIu32, p);
			cell(&groups, 3, "%" PRIu64, gp->committed);
			cell(&groups, 4, "%" PRIu64, gp->next);
			cell(&groups, 5, "%" PRIu64, gp->lag_bytes);
			cell(&groups, 6, "%s", gp->on_disk ? "disk" : "ring");
			if (gs->mode == SHMQ_GROUP_PARTITIONED)
				cell(&groups, 7, "%" PRIu32, gp->owner_pid);
			else
				cell(&groups, 7, "shared");
		}
	}
	print_table(&groups, "  ");
	goto out;
nomem:
	rc = fail(-ENOMEM, "format stat of topic %s", st->name);
out:
	free(parts.cells);
	free(groups.cells);
	return rc;
}

struct name_list {
	char **names;
	size_t n, cap;
};

static int collect_name(const char *name, void *arg)
{
	struct name_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		char **p = realloc(l->names, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->names = p;
		l->cap = cap;
	}
	l->names[l->n] = strdup(name);
	if (!l->names[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

/* groups: per group its mode, members (pid, partitions, in flight). */
static int print_groups(const struct shmq_topic_stat *st)
{
	uint32_t g, i, p;

	if (st->group_count == 0) {
		printf("topic %s: no groups\n", st->name);
		return 0;
	}
	for (g = 0; g < st->group_count; g++) {
		const struct shmq_group_stat *gs = &st->groups[g];
		uint64_t lag = 0;

		for (p = 0; p < st->partition_count; p++)
			lag += gs->partitions[p].lag_bytes;
		printf("topic %s group %s: %s%s, %" PRIu32 " member%s, lag %" PRIu64 " bytes",
		       st->name, gs->name,
		       word_of(mode_words, gs->mode),
		       gs->untethered ? ", untethered" : "",
		       gs->members, gs->members == 1 ? "" : "s", lag);
		if (gs->mode == SHMQ_GROUP_PARTITIONED)
			printf(", generation %" PRIu32, gs->generation);
		else
			printf(", waiting again %" PRIu32 ", redelivered %" PRIu64
			       ", ack timeouts %" PRIu64 ", dead-lettered %" PRIu64,
			       gs->parked, gs->redelivered, gs->expired, gs->dead_lettered);
		printf("\n");
		for (i = 0; i < gs->members; i++) {
			const struct shmq_member_stat *ms = &gs->member[i];

			printf("  member pid %" PRIu32 ": in flight %" PRIu32, ms->pid,
			       ms->in_flight);
			if (gs->mode == SHMQ_GROUP_PARTITIONED) {
				bool first = true;

				printf(", partitions");
				for (p = 0; p < st->partition_count; p++) {
					if (gs->partitions[p].owner_pid != ms->pid)
						continue;
					printf("%s%" PRIu32, first ? " " : ",", p);
					first = false;
				}
				if (first)
					printf(" none (waiting for a hand-over)");
			}
			printf("\n");
		}
		for (p = 0; p < st->partition_count; p++) {
			const struct shmq_group_partition_stat *gp = &gs->partitions[p];

			printf("  partition %" PRIu32 ": committed %" PRIu64 ", next %" PRIu64
			       ", lag %" PRIu64 " bytes, reads from %s",
			       p, gp->committed, gp->next, gp->lag_bytes,
			       gp->on_disk ? "disk" : "ring");
			if (gs->untethered)
				printf(", missed %" PRIu64, gp->missed);
			printf("\n");
		}
	}
	return 0;
}

static int stat_one(shmq_client_t *client, const char *topic, bool all,
		    int (*print)(const struct shmq_topic_stat *))
{
	struct shmq_topic_stat *st;
	int rc;

	rc = shmq_topic_stat(client, topic, &st);
	/* A topic deleted between list and stat is simply gone. */
	if (rc == -ENOENT && all)
		return 0;
	if (rc)
		return fail(rc, "stat topic %s", topic);
	rc = print(st);
	shmq_topic_stat_free(st);
	return rc;
}

static int for_topics(const struct command *cmd, int argc, char **argv,
		      int (*print)(const struct shmq_topic_stat *));

static int cmd_stat(const struct command *cmd, int argc, char **argv)
{
	return for_topics(cmd, argc, argv, print_topic_stat);
}

static int cmd_groups(const struct command *cmd, int argc, char **argv)
{
	return for_topics(cmd, argc, argv, print_groups);
}

/* stat and groups: one topic, or every topic. */
static int for_topics(const struct command *cmd, int argc, char **argv,
		      int (*print)(const struct shmq_topic_stat *))
{
	struct name_list l = { 0 };
	shmq_client_t *client;
	char *topic = NULL;
	size_t i;
	int rc;

	rc = parse_plain(cmd, argc, argv);
	if (rc)
		return rc;
	rc = positionals(cmd, argc, argv, argc - optind >= 1 ? 1 : 0, &topic);
	if (rc)
		return rc;
	rc = open_client(cmd, &client);
	if (rc)
		return rc;
	if (topic) {
		rc = stat_one(client, topic, false, print);
		goto out;
	}
	/* Collect first: the list callback must not call back into shmq. */
	rc = shmq_topic_list(client, collect_name, &l);
	if (rc) {
		rc = fail(rc, "list topics");
		goto out;
	}
	for (i = 0; i < l.n; i++) {
		if (i)
			putchar('\n');
		if (stat_one(client, l.names[i], true, print))
			rc = EXIT_FAILED;
	}
out:
	for (i = 0; i < l.n; i++)
		free(l.names[i]);
	free(l.names);
	shmq_close(client);
	if (fflush(stdout) && !rc) {
		fprintf(stderr, PROG ": write to stdout: %s\n", strerror(errno));
		rc = EXIT_FAILED;
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * produce
 */

static int cmd_produce(const struct command *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "partition", required_argument, NULL, OPT_PARTITION },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ 0 },
	};
	struct shmq_producer_opts po = SHMQ_PRODUCER_OPTS_INIT;
	struct shmq_topic_stat *st;
	shmq_producer_t *producer = NULL;
	shmq_client_t *client;
	const char *key = NULL;
	int partition = SHMQ_PARTITION_ANY;
	int timeout_ms = -1;
	char *line = NULL;
	size_t cap = 0;
	uint64_t lineno = 0, v;
	ssize_t len;
	char *topic;
	int c, rc;

	while ((c = next_opt(argc, argv, opts)) != -1) {
		rc = common_opt(cmd, c, argv);
		if (rc > 0)
			return rc;
		if (rc == 0)
			continue;
		switch (c) {
		case OPT_KEY:
			if (strlen(optarg) > SHMQ_KEY_MAX)
				return usage_error(cmd, "--key: longer than %u bytes",
						   SHMQ_KEY_MAX);
			key = optarg;
			break;
		case OPT_PARTITION:
			if (!parse_u64_range(optarg, 0, SHMQ_MAX_PARTITIONS - 1, &v))
				return usage_error(cmd, "--partition: '%s' is not a number in 0..%d",
						   optarg, SHMQ_MAX_PARTITIONS - 1);
			partition = (int)v;
			break;
		case OPT_TIMEOUT:
			if (!parse_timeout(optarg, &timeout_ms))
				return usage_error(cmd, "--timeout: '%s' is not milliseconds (or -1)",
						   optarg);
			break;
		}
	}
	rc = positionals(cmd, argc, argv, 1, &topic);
	if (!rc)
		rc = open_client(cmd, &client);
	if (rc)
		return rc;

	/* Check --partition against the topic so the error names the limit. */
	if (partition != SHMQ_PARTITION_ANY) {
		rc = shmq_topic_stat(client, topic, &st);
		if (rc) {
			rc = fail(rc, "stat topic %s", topic);
			goto out;
		}
		v = st->partition_count;
		shmq_topic_stat_free(st);
		if ((uint64_t)partition >= v) {
			fprintf(stderr, PROG ": produce: partition %d out of range: topic %s has %" PRIu64 " partitions\n",
				partition, topic, v);
			rc = EXIT_FAILED;
			goto out;
		}
	}
	rc = shmq_producer_open(client, topic, &po, &producer);
	if (rc) {
		rc = fail(rc, "open producer on topic %s", topic);
		goto out;
	}
	catch_stop_signals();
	while (!stop_signal) {
		errno = 0;
		len = getline(&line, &cap, stdin);
		if (len < 0) {
			if (ferror(stdin) && errno != EINTR) {
				fprintf(stderr, PROG ": read stdin: %s\n",
					strerror(errno));
				rc = EXIT_FAILED;
			}
			break;
		}
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			len--;
		rc = shmq_send(producer, partition, key, key ? strlen(key) : 0,
			       line, (size_t)len, timeout_ms, NULL);
		if (rc < 0) {
			rc = fail(rc, "send line %" PRIu64 " to topic %s",
				  lineno, topic);
			break;
		}
		rc = 0;
	}
	if (stop_signal && !rc) {
		/* Not an error to hide: stdin was not all published. */
		fprintf(stderr, PROG ": produce: interrupted by signal %d after %" PRIu64 " line%s\n",
			(int)stop_signal, lineno, lineno == 1 ? "" : "s");
		rc = EXIT_FAILED;
	}
out:
	free(line);
	shmq_producer_close(producer);
	shmq_close(client);
	return rc;
}

/* ------------------------------------------------------------------------
 * consume
 */

/* Write one message; false if stdout failed. */
static bool print_msg(const struct shmq_msg *m, bool offsets)
{
	if (offsets)
		printf("%" PRIu32 "\t%" PRIu64 "\t", m->partition, m->offset);
	if (m->value_len)
		fwrite(m->value, 1, m->value_len, stdout);
	putchar('\n');
	/* Flush per message so that a pipe sees each line at once. */
	return fflush(stdout) == 0 && !ferror(stdout);
}

/*
 * A time for --from: "@SECONDS[.FRACTION]" since the epoch, or UTC
 * "YYYY-MM-DDTHH:MM:SS[.FRACTION][Z]".  In nanoseconds, CLOCK_REALTIME.
 */
static bool parse_time(const char *s, uint64_t *ns)
{
	unsigned long long sec = 0;
	double frac = 0;
	struct tm tm;
	char *end;

	if (s[0] == '@') {
		errno = 0;
		sec = strtoull(s + 1, &end, 10);
		if (errno || end == s + 1)
			return false;
		if (*end == '.') {
			frac = strtod(end, &end);
		}
		if (*end)
			return false;
	} else {
		memset(&tm, 0, sizeof(tm));
		end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
		if (!end)
			return false;
		if (*end == '.')
			frac = strtod(end, &end);
		if (*end == 'Z')
			end++;
		if (*end)
			return false;
		sec = (unsigned long long)timegm(&tm);
	}
	*ns = sec * 1000000000ull + (uint64_t)(frac * 1e9);
	return *ns != 0;
}

static int cmd_consume(const struct command *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "from", required_argument, NULL, OPT_FROM },
		{ "mode", required_argument, NULL, OPT_MODE_GROUP },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "print-offsets", no_argument, NULL, OPT_PRINT_OFFSETS },
		{ "ack", no_argument, NULL, OPT_ACK },
		{ "ack-timeout", required_argument, NULL, OPT_ACK_TIMEOUT },
		{ "max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES },
		{ "dead-letter", required_argument, NULL, OPT_DEAD_LETTER },
		{ "untethered", no_argument, NULL, OPT_UNTETHERED },
		{ 0 },
	};
	struct shmq_consumer_opts co = SHMQ_CONSUMER_OPTS_INIT;
	shmq_consumer_t *consumer = NULL;
	shmq_client_t *client;
	const char *group = NULL;
	bool offsets = false, ack = false;
	uint64_t count = 0, got = 0, n;
	int timeout_ms = -1;
	int64_t deadline = 0;
	uint64_t from_time = 0;
	int corrupt = 0;
	char *topic;
	int c, rc, err;

	while ((c = next_opt(argc, argv, opts)) != -1) {
		rc = common_opt(cmd, c, argv);
		if (rc > 0)
			return rc;
		if (rc == 0)
			continue;
		switch (c) {
		case OPT_GROUP:
			if (!valid_name(optarg))
				return usage_error(cmd, "--group: bad group name '%s'",
						   optarg);
			group = optarg;
			break;
		case OPT_FROM:
			if (!strcmp(optarg, "earliest")) {
				co.from = SHMQ_FROM_EARLIEST;
			} else if (!strcmp(optarg, "latest")) {
				co.from = SHMQ_FROM_LATEST;
			} else if (!strcmp(optarg, "committed")) {
				co.from = SHMQ_FROM_COMMITTED;
			} else if (parse_u64(optarg, &co.offset)) {
				co.from = SHMQ_FROM_OFFSET;
			} else if (parse_time(optarg, &from_time)) {
				co.from = SHMQ_FROM_LATEST;
			} else {
				return usage_error(cmd, "--from: '%s' is not earliest, latest, committed, an offset or a time (@SECONDS or YYYY-MM-DDTHH:MM:SS[Z])",
						   optarg);
			}
			break;
		case OPT_MODE_GROUP:
			rc = parse_word(cmd, "--mode", optarg, mode_words, &co.mode);
			if (rc)
				return rc;
			break;
		case OPT_COUNT:
			if (!parse_u64_range(optarg, 1, UINT64_MAX, &count))
				return usage_error(cmd, "--count: '%s' is not a positive number",
						   optarg);
			break;
		case OPT_TIMEOUT:
			if (!parse_timeout(optarg, &timeout_ms))
				return usage_error(cmd, "--timeout: '%s' is not milliseconds (or -1)",
						   optarg);
			break;
		case OPT_PRINT_OFFSETS:
			offsets = true;
			break;
		case OPT_ACK:
			ack = true;
			break;
		case OPT_ACK_TIMEOUT:
			if (!parse_u64_range(optarg, 1, UINT32_MAX, &n))
				return usage_error(cmd, "--ack-timeout: '%s' is not a positive number of milliseconds",
						   optarg);
			co.ack_timeout_ms = (uint32_t)n;
			break;
		case OPT_MAX_DELIVERIES:
			if (!parse_u64_range(optarg, 1, UINT32_MAX, &n))
				return usage_error(cmd, "--max-deliveries: '%s' is not a positive number",
						   optarg);
			co.max_deliveries = (uint32_t)n;
			break;
		case OPT_DEAD_LETTER:
			if (!valid_name(optarg))
				return usage_error(cmd, "--dead-letter: bad topic name '%s'", optarg);
			co.dead_letter_topic = optarg;
			break;
		case OPT_UNTETHERED:
			co.flags |= SHMQ_CONSUMER_UNTETHERED;
			break;
		}
	}
	rc = positionals(cmd, argc, argv, 1, &topic);
	if (rc)
		return rc;
	if (!group)
		return usage_error(cmd, "missing --group G");
	if ((co.ack_timeout_ms || co.max_deliveries) && !ack)
		return usage_error(cmd, "--ack-timeout and --max-deliveries go with --ack");
	if (!co.max_deliveries != !co.dead_letter_topic)
		return usage_error(cmd, "--max-deliveries and --dead-letter go together");
	if (ack && (co.flags & SHMQ_CONSUMER_UNTETHERED))
		return usage_error(cmd, "--ack and --untethered do not go together: an untethered group delivers at most once");
	rc = open_client(cmd, &client);
	if (rc)
		return rc;
	rc = shmq_consumer_open(client, topic, group, &co, &consumer);
	if (rc) {
		rc = fail(rc, "join group %s of topic %s", group, topic);
		goto out;
	}
	if (from_time) {
		rc = shmq_consumer_seek_time(consumer, SHMQ_ALL_PARTITIONS, from_time);
		if (rc) {
			rc = fail(rc, "seek topic %s to the time given", topic);
			goto out;
		}
	}
	catch_stop_signals();
	if (timeout_ms >= 0)
		deadline = now_ms() + timeout_ms;
	while (!stop_signal && (!count || got < count)) {
		struct shmq_msg msg;
		int wait = POLL_SLICE_MS;

		if (timeout_ms >= 0) {
			int64_t left = deadline - now_ms();

			wait = left <= 0 ? 0 : left < wait ? (int)left : wait;
		}
		err = shmq_consumer_poll(consumer, &msg, wait);
		if (err == -EAGAIN || err == -EINTR) {
			if (timeout_ms >= 0 && now_ms() >= deadline)
				break;
			continue;
		}
		if (err == SHMQ_ELAPPED) {
			/* Said on stderr, so that stdout stays the messages. */
			fprintf(stderr, PROG ": partition %" PRIu32 " of topic %s: missed %" PRIu64
				" messages (lapped by producers)\n",
				msg.partition, topic, msg.missed);
			continue;
		}
		if (err == SHMQ_ECORRUPT) {
			/* The handle skips that partition from now on. */
			fail(err, "consume partition %" PRIu32 " of topic %s",
			     msg.partition, topic);
			corrupt = 1;
			continue;
		}
		if (err) {
			rc = fail(err, "consume topic %s", topic);
			break;
		}
		if (!print_msg(&msg, offsets)) {
			/*
			 * Not printed, so not to be committed: give the message
			 * back to the group before the commit below.
			 */
			int serr = errno;

			/* Untethered: delivered is delivered (at most once). */
			err = co.flags & SHMQ_CONSUMER_UNTETHERED ? 0 :
				ack ? shmq_consumer_nack(consumer) :
				shmq_consumer_seek(consumer, msg.partition, msg.offset);
			if (err)
				fail(err, "give back offset %" PRIu64 " of partition %" PRIu32,
				     msg.offset, msg.partition);
			/* A reader that went away is how pipelines end. */
			if (serr != EPIPE)
				fprintf(stderr, PROG ": write to stdout: %s\n",
					strerror(serr));
			rc = EXIT_FAILED;
			break;
		}
		got++;
		if (ack) {
			/* Printed and flushed: done with it, and the group knows. */
			err = shmq_consumer_ack(consumer);
			if (err == SHMQ_EREVOKED)
				fprintf(stderr, PROG ": partition %" PRIu32 " offset %" PRIu64
					": printed after its ack timeout; another member has it too\n",
					msg.partition, msg.offset);
			shmq_consumer_commit(consumer);
		}
		if (timeout_ms >= 0)
			deadline = now_ms() + timeout_ms;
	}
	shmq_consumer_release(consumer);
	err = shmq_consumer_commit(consumer);
	/* A deletion already reported by the poll needs no second message. */
	if (err && !(err == SHMQ_EDELETED && rc))
		rc = fail(err, "commit group %s of topic %s", group, topic);
	if (!rc && corrupt)
		rc = EXIT_FAILED;
out:
	shmq_consumer_close(consumer);
	shmq_close(client);
	return rc;
}

/* ------------------------------------------------------------------------
 * main
 */

static const struct command commands[] = {
	{ "create", cmd_create,
	  "create TOPIC --partitions N --ring-bytes SIZE [OPTIONS]",
	  "Ask shmqd to create a topic.\n"
	  "  --partitions N          1..256 partitions\n"
	  "  --ring-bytes SIZE       ring per partition: a power of two, 64K..4G\n"
	  "  --max-message SIZE      largest key+value (default ring/4, at most ring/2 - 32)\n"
	  "  --full spill|block|fail when a ring is full: spill what lagging groups hold to\n"
	  "                          disk (default), wait, or fail at once\n"
	  "  --spill off|overflow|always  what goes to disk: nothing, what does not fit\n"
	  "                          (default with --full spill), or everything (a journal)\n"
	  "  --retain-bytes SIZE     spill files kept per partition (default: no limit)\n"
	  "  --retain-ms MS          age of spill files kept (default: no limit)\n"
	  "  --numa-node N           bind the rings to NUMA node N\n"
	  "  --mode OCTAL            segment permissions (default 0600)\n"
	  "  --stall-timeout-ms MS   pad over a producer stuck in a claim (default 10000)\n"
	  "SIZE is bytes, or a number with K, M or G (powers of 1024).\n" },
	{ "delete", cmd_delete, "delete TOPIC", "Ask shmqd to delete a topic.\n" },
	{ "group-delete", cmd_group_delete, "group-delete TOPIC GROUP",
	  "Forget a consumer group that has no live member, so that it no longer\n"
	  "holds the topic's rings.\n" },
	{ "list", cmd_list, "list", "Print the name of each topic, one a line.\n" },
	{ "stat", cmd_stat, "stat [TOPIC]",
	  "Show the partitions and groups of one topic, or of every topic.\n"
	  "Offsets and sizes are bytes; LAG is what a group has not yet taken.\n" },
	{ "groups", cmd_groups, "groups [TOPIC]",
	  "Show the consumer groups of one topic, or of every topic: mode (and whether\n"
	  "untethered), members (pid, partitions owned, messages in flight), and per\n"
	  "partition the committed and next offsets, the lag, whether it reads from\n"
	  "ring or disk, and for an untethered group how many messages it missed.\n" },
	{ "produce", cmd_produce,
	  "produce TOPIC [--key K] [--partition N] [--timeout MS]",
	  "Publish each line of stdin, without its newline, as one message.\n"
	  "  --key K          message key (its hash picks the partition)\n"
	  "  --partition N    publish into partition N\n"
	  "  --timeout MS     how long to wait for room in a full ring (-1: for ever)\n"
	  "Prints nothing on success; stops at the first failed send.\n" },
	{ "consume", cmd_consume,
	  "consume TOPIC --group G [--from earliest|latest|committed|OFFSET|TIME]\n"
	  "          [--mode shared|partitioned] [--untethered] [--count N] [--timeout MS]\n"
	  "          [--print-offsets] [--ack [--ack-timeout MS] [--max-deliveries N --dead-letter TOPIC]]",
	  "Print each message's value on its own line, as a member of group G.\n"
	  "  --from WHERE     where a group with no live member starts (default committed);\n"
	  "                   an OFFSET (as --print-offsets shows) applies to every partition;\n"
	  "                   a time, @SECONDS or YYYY-MM-DDTHH:MM:SS[Z] (UTC), moves the\n"
	  "                   group to the first message at or after it, on disk or in the ring\n"
	  "  --mode M         for a new group: shared (each message to one member, the\n"
	  "                   default) or partitioned (each partition to one member)\n"
	  "  --untethered     for a new group: never hold producers back; when they lap\n"
	  "                   the group, say on stderr how many messages it missed\n"
	  "  --count N        exit after N messages\n"
	  "  --timeout MS     exit when no message came for MS milliseconds (default never)\n"
	  "  --print-offsets  prefix each value with PARTITION<tab>OFFSET<tab>\n"
	  "  --ack            acknowledge and commit each message once it is printed and\n"
	  "                   flushed; one that cannot be written is given back (nack)\n"
	  "  --ack-timeout MS shared groups: a message not acknowledged within MS goes\n"
	  "                   to another member\n"
	  "  --max-deliveries N --dead-letter TOPIC\n"
	  "                   shared groups: a message delivered N times goes to TOPIC\n"
	  "On exit (also on SIGINT or SIGTERM) what was printed is committed for G.\n" },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_main_help(FILE *f)
{
	size_t i;

	fprintf(f, "usage: " PROG " [--dir DIR] COMMAND [ARGS]\n\n"
		   "Commands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %s\n", commands[i].synopsis);
	fprintf(f, "\nThe data directory comes from --dir or SHMQ_DIR.\n"
		   "'" PROG " COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ 0 },
	};
	const struct command *cmd = NULL;
	size_t i;
	int c;

	/* '+': stop at the command name; its options are its own. */
	while ((c = getopt_long(argc, argv, "+:", opts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR:
			dir_arg = optarg;
			break;
		case OPT_HELP:
			print_main_help(stdout);
			return 0;
		case OPT_VERSION:
			printf(PROG " %d.%d\n", SHMQ_VERSION_MAJOR,
			       SHMQ_VERSION_MINOR);
			return 0;
		case ':':
			return usage_error(NULL, "option '%s' needs a value",
					   argv[optind - 1]);
		default:
			return usage_error(NULL, "unknown option '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		print_main_help(stderr);
		return EXIT_USAGE;
	}
	for (i = 0; i < NCOMMANDS; i++)
		if (!strcmp(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd)
		return usage_error(NULL, "unknown command '%s'", argv[optind]);

	/* The command sees itself as argv[0]; reset getopt for it. */
	argc -= optind;
	argv += optind;
	optind = 0;
	return cmd->run(cmd, argc, argv);
}
