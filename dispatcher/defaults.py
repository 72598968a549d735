"""Tunable defaults of the master, each with the reason for its value."""

from __future__ import annotations

# A file must hold still (size and mtime) this long before it is counted: long enough for a
# copy that pauses between writes, short enough that a rotated log is counted within seconds.
SETTLE_SECONDS = 2.0

# A worker's lease on a task lasts this long unless a heartbeat extends it; a killed worker's
# files go to another worker after at most this delay.
LEASE_SECONDS = 30.0

# However often its worker heartbeats, a lease on the file being counted ends this long after
# it was taken: a worker stuck on one file, or a client that holds a task without counting it,
# gives it back. Long enough for a file of hundreds of GB at disk speed.
MAX_LEASE_AGE_SECONDS = 3600.0

# Attempts per file version before it is recorded as failed with its last error.
MAX_ATTEMPTS = 3

# First retry delay after a failed attempt; doubles with each attempt, capped.
RETRY_BACKOFF_SECONDS = 1.0
RETRY_BACKOFF_CAP_SECONDS = 60.0

# serve --keep prunes once a tenth of the time it keeps, within these bounds: often enough
# that the ledger keeps about what it is told to, seldom enough that walking a big one is
# a small part of the loop's time.
PRUNE_EVERY_MIN_SECONDS = 1.0
PRUNE_EVERY_MAX_SECONDS = 3600.0

# Events are hints: a full rescan of the root runs this often to catch what they missed.
RESCAN_SECONDS = 300.0

# The longest a worker's take() waits on the master for work: calls stay short so a stopping
# worker or master never waits on the other for long.
TAKE_WAIT_CAP_SECONDS = 2.0

# A connection must finish the authkey handshake and its first request within this time; the
# stdlib server has no such limit and keeps one thread per silent connection forever.
LOGIN_TIMEOUT_SECONDS = 5.0

# How often the master loop wakes when nothing arrives: bounds settle and lease-expiry latency.
TICK_SECONDS = 0.1

# The ledger commits (one fsync) at most this often: a busy master spends its time on files,
# not on syncing, and a result is durable at most this long after it arrives.
COMMIT_SECONDS = 0.1

# --on-done: threads that move and delete counted files, so that the master loop never waits on
# the filesystem. Their waits are long (an NFS round trip per link or unlink; disk I/O for
# every file unlinked on a local disk), and four threads overlap them, where one thread would
# wait out each in turn.
DISPOSER_THREADS = 4
# Files a disposer thread takes at a time: a big batch (what a restart finds pending) is shared.
DISPOSER_BATCH = 100


# summary: a table longer than this is not read, only scrolled (and rich lays out every row):
# beyond it the table keeps the files that need attention and says how to get the rest.
TABLE_ROWS = 100
SUMMARY_FORMATS = ("table", "json", "csv")
# summary --by: one row per file, or totals per top-level folder (the source host, usually),
# worker, worker host or day counted.
SUMMARY_GROUPS = ("file", "dir", "worker", "host", "day")
SUMMARY_SORTS = ("lines", "errors", "rate")
# summary --errors masks the sample lines of at most this many files, those with the most
# error lines: enough samples to rank the messages, while masking, which costs most for lines
# unlike any other (a hex id in each), stays a matter of seconds on the largest ledgers.
# Beyond it the output says how many files it read.
ERROR_SAMPLE_FILES = 100_000

# report: the files in each of its top lists, the folders on its bar chart, the failed files and
# the messages it lists. Beyond them the page says how many there are and which summary view
# lists them all: a page over a million files stays a page (about 60 kB).
REPORT_TOP_FILES = 20
REPORT_FOLDERS = 30
REPORT_FAILED_FILES = 100
REPORT_MESSAGES = 20
# report's time chart counts files per minute over up to 6 hours (360 bars), per hour up to 16
# days (384), per day beyond; more than REPORT_BARS bars are merged by N days, so that a bar
# stays wide enough to see and hover.
REPORT_MINUTES_UP_TO = 6 * 3600.0
REPORT_HOURS_UP_TO = 16 * 86400.0
REPORT_BARS = 400
# serve --http: the page reloads itself this often, or after three times what it took to read
# the ledger (seconds on a big one), and until it is that old every request gets the same
# page: it is built in the master's process, and viewers, however many, must not keep that busy.
REPORT_REFRESH_SECONDS = 5
# serve --http and --metrics: a connection must send its request within this time of being
# accepted, however it spends it (silent, or dripping a byte at a time), and a reply that the
# client does not read is given up after as long; at most this many connections are served at
# once by each (over it, a new one is closed at once). Together they bound the descriptors and
# threads the two can take from the master, whose workers, status and scans need them too.
HTTP_REQUEST_TIMEOUT_SECONDS = 5.0
HTTP_MAX_CONNECTIONS = 64


# status --watch: fresh enough to watch a queue drain, one small request to the master each time.
STATUS_INTERVAL_SECONDS = 2.0

STATE_DIR = ".logdispatch"
LEDGER_FILE = "ledger.sqlite3"
LOCK_FILE = "master.lock"
